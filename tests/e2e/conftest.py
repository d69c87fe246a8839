"""End-to-end tests on the three-node lab with Pacemaker (tests/vmlab), configured from
cib-examples/pcs.sh exactly as an administrator would (vmlab/cluster_config.py).

One lab per session (~15 s up, ~55 s configuration), shared by the tests that use the
`cluster` fixture, in the order below: the scenarios (test_scenarios.py, each building on
the previous state), then the CephHealth tests (test_cephhealth_live.py, which stop Ceph
monitors), the other modules of this lab, and test_chaos.py last (its canary leaves the
VMs under VirtualDomain). An invariant checker (vmlab/invariants.py) samples every guarded
image from the first VM start to the end and fails the tests on two writers or a lost VM.
The session lab goes down after its last test; the modules that do not use it run after
that, alone on the machine: the checker's own synthetic tests (test_invariant_checker.py,
no lab) and the modules with labs of their own (test_mass_failover.py,
test_remote_nodes.py).

Measured figures (failover, migration downtime, red-after-loss, ...) are printed at the
end of the run, whatever pytest's capture setting, and written to
/tmp/vmlab/e2e-figures.json.

Needs root and Debian's packages (`make deps`); without root the tests skip loudly.
VMCEPH_E2E_MON_LEASE sets the lab's Ceph `mon lease` (default 2, see cib-examples/README.md;
5 is Ceph's default); VMCEPH_E2E_LAB the lab's name (default e2e: a second run under the
same name fails at once, see vmlab/owner.py); VMCEPH_E2E_KEEP_LOGS=1 keeps the lab's logs.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from vmlab import Lab  # noqa: E402
from vmlab.cluster_config import configure  # noqa: E402
from vmlab.invariants import InvariantChecker  # noqa: E402
from vmlab.owner import owning  # noqa: E402
from vmlab.pytest_labs import SessionCloser, own_labs_last  # noqa: E402
from vmlab.story import Story  # noqa: E402
from vmlab.util import pacemaker_lab_missing  # noqa: E402

MON_LEASE = float(os.environ.get("VMCEPH_E2E_MON_LEASE", "2"))
LAB_NAME = os.environ.get("VMCEPH_E2E_LAB", "e2e")
# VMCEPH_E2E_KEEP_LOGS=1: the session lab's logs (pacemaker.log, Ceph's) stay in its state
# dir after the run, for finding where the time of a scenario went
KEEP_LOGS = os.environ.get("VMCEPH_E2E_KEEP_LOGS") == "1"
FIGURES = {}
FIGURES_FILE = "/tmp/vmlab/e2e-figures.json"
MODULE_ORDER = ["test_invariant_checker.py", "test_scenarios.py", "test_cephhealth_live.py"]
# after every other module: the chaos canary switches the VMs to VirtualDomain
MODULE_LAST = ["test_chaos.py"]


def record(key, value):
    """A measured figure for the summary at the end of the run."""
    FIGURES[key] = value
    print(f"FIGURE {key}: {value}")


def pytest_collection_modifyitems(items):
    """The e2e tests in MODULE_ORDER (stable: the order within a module stays), the other
    modules of the session lab, MODULE_LAST, then the modules with labs of their own (the
    session lab is down by then: pytest_runtest_teardown); whatever else a run collects
    keeps its place."""
    def rank(name, shared):
        if name in MODULE_LAST:
            return len(MODULE_ORDER) + 1 + MODULE_LAST.index(name)
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)
    for item in own_labs_last(items, "cluster", Path(__file__).parent, rank):
        item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("vmceph end-to-end figures")
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key}: {value}")
    try:
        os.makedirs(os.path.dirname(FIGURES_FILE), exist_ok=True)
        with open(FIGURES_FILE, "w") as f:
            json.dump(FIGURES, f, indent=2, default=str)
    except OSError:
        pass




class Cluster:
    def __init__(self, lab, cfg, checker):
        self.lab, self.cfg, self.checker = lab, cfg, checker
        self.story = Story(lab, cfg, checker, say=print)


# closes the session lab after the last test that uses it, so that the modules with labs
# of their own (test_mass_failover.py, test_remote_nodes.py) run alone on the machine
SESSION = SessionCloser("cluster")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    SESSION.after_test(item)


@pytest.fixture(scope="session")
def cluster():
    why = pacemaker_lab_missing()
    if why:
        pytest.skip("!!! END-TO-END TESTS NOT RUN: " + why + " !!!")
    extra = {"mon lease": int(MON_LEASE) if MON_LEASE == int(MON_LEASE) else MON_LEASE}
    lab = Lab(name=LAB_NAME, nodes=3, pacemaker=True, node_prefix="node", token_ms=1000,
              project_root=str(ROOT), ceph_conf_extra=extra)
    with owning(lab):  # another run using this lab name stops here instead of killing it
        lab.down()  # whatever an interrupted run left
        checker = None

        def close():
            if checker is not None:
                checker.stop()
                record("invariant checker", checker.report())
                if checker.violations:
                    record("invariant violations", [repr(v) for v in checker.violations])
            lab.down(keep_logs=KEEP_LOGS)
        SESSION.register(close)
        t0 = time.monotonic()
        try:
            lab.up()
            record("lab up (s)", round(time.monotonic() - t0, 1))
            cfg = configure(lab)
            record("configure from cib-examples/pcs.sh (s)", cfg.timings.get("total_s"))
            record("mon lease (s)", MON_LEASE)
            checker = InvariantChecker(lab, cfg.vms, log=print).start()
            yield Cluster(lab, cfg, checker)
        finally:
            SESSION.close_if_open()   # not closed early: an interrupted run


@pytest.fixture
def figure():
    """record(key, value): a measured figure for the summary at the end of the run."""
    return record


@pytest.fixture
def story(cluster):
    return cluster.story


@pytest.fixture
def invariants(cluster, request):
    """The test fails if the invariant checker recorded anything while it ran (a coverage
    gap too); each image's longest sampling gap during the test is a figure."""
    mark = len(cluster.checker.violations)
    t0 = time.monotonic()
    yield cluster.checker
    record(f"sampling: longest gap per image, {request.node.name} (s)",
           {img: f"{c['longest_gap_s']}" + (f" ({c['cause']})" if c["cause"] else "")
            for img, c in cluster.checker.coverage(since=t0).items()})
    cluster.checker.assert_clean(mark)
