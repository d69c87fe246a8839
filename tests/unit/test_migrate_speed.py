"""migrate_to asks for the target's health while the facts are gathered, migrate_from
reuses the domain validate parsed (issue 15, item 5), and neither weakens a rule:

- DESIGN: migrate_to refuses a target whose #health-ceph is red; its Ceph checks stay;
  every call is bounded by the action's deadline (an attrd that does not answer in time
  leaves the health unknown, as before: the decision then says "health unknown");
- migrate_from needs only the domain's name and UUID (it never looks at the images).
"""

import time

import pytest

import fakes
from test_agent_flows import NODE2, World, _pacemaker_tools
from vmceph import domxml, facts, migration, ocf, rbdvd


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def _attrd(w, health, before=""):
    """attrd_updater answering node2's #health-ceph, running ``before`` first."""
    w.bin.add("attrd_updater", """%s
case "$*" in
  "-n #health-ceph -Q --output-as=xml -N node2") echo '<pacemaker-result api-version="2.25">
  <attribute name="#health-ceph" value="%s" host="node2"/>
  <status code="0" message="OK"/>
</pacemaker-result>';;
  *) echo "attrd_updater: no such attribute" >&2; exit 105;;
esac""" % (before, health))


@pytest.mark.parametrize("health,rc", [("red", ocf.OCF_ERR_GENERIC), ("green", 0)])
def test_health_is_asked_while_the_facts_are_gathered(w, monkeypatch, health, rc):
    """attrd_updater starts before the facts gathering (Ceph session, cluster view) has
    finished: the gathering waits (at most 5 s) for the query's start mark. Asked after
    the gathering, as before, the mark never comes in time and the test fails."""
    _pacemaker_tools(w, health)
    mark = w.tmp / "attrd-started"
    _attrd(w, health, before="touch '%s'" % mark)
    seen = []
    real = facts.gather_with

    def gather_with(*a, **k):
        g = real(*a, **k)
        t0 = time.monotonic()
        while not mark.exists() and time.monotonic() - t0 < 5.0:
            time.sleep(0.01)
        seen.append(mark.exists())
        return g
    assert w.start() == 0, w.err
    mark.unlink(missing_ok=True)
    monkeypatch.setattr(facts, "gather_with", gather_with)
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == rc, w.err
    assert seen == [True]
    if health == "red":
        assert "target node node2 reports #health-ceph=red" in w.reason
        assert not w.node1.called("migrateToURI3")
        assert w.node1.running("vm1") and not w.node2.running("vm1")
    else:
        assert w.node2.running("vm1") and not w.node1.running("vm1")
        assert "target node2 healthy (green)" in w.logfile.read_text()


def test_a_slow_red_answer_is_still_waited_for(w):
    """The concurrent query answers red after the facts are in: still refused."""
    _pacemaker_tools(w, "red")
    _attrd(w, "red", before="sleep 0.5")
    assert w.start() == 0, w.err
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == ocf.OCF_ERR_GENERIC
    assert "target node node2 reports #health-ceph=red" in w.reason
    assert not w.node1.called("migrateToURI3")


def test_an_attrd_that_does_not_answer_in_time_leaves_the_health_unknown(w, monkeypatch):
    """Bounded: migrate_to waits HEALTH_QUERY_CAP_S for attrd, then decides with the
    health unknown (as when attrd_updater failed before this change), never hangs."""
    _pacemaker_tools(w, "red")
    _attrd(w, "red", before="sleep 3")
    monkeypatch.setattr(migration, "HEALTH_QUERY_CAP_S", 0.3)
    assert w.start() == 0, w.err
    t0 = time.monotonic()
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0, w.err
    assert time.monotonic() - t0 < 2.5
    log = w.logfile.read_text()
    assert "cannot read node attribute #health-ceph of node2" in log
    assert "target node2 healthy (health unknown)" in log


@pytest.mark.parametrize("failure", ["exit 1", "missing"])
def test_a_failing_attrd_leaves_the_health_unknown(w, failure):
    _pacemaker_tools(w, "red")
    if failure == "missing":
        (w.tmp / "bin" / "attrd_updater").unlink()
        w.bin.add("attrd_updater-not-here")
    else:
        w.bin.add("attrd_updater", "exit 1")
    assert w.start() == 0, w.err
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0, w.err
    assert "target node2 healthy (health unknown)" in w.logfile.read_text()


def test_migrate_from_parses_the_domain_once_and_resolves_no_disk(w, monkeypatch):
    assert w.start() == 0
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0, w.err
    fakes.install(monkeypatch, host=w.node2)
    w.ceph.client_ip = NODE2
    parsed, resolved = [], []
    real_parse, real_resolve = domxml.parse_domain, rbdvd.RBDVirtualDomain._resolve_disks

    def parse_domain(*a, **k):
        parsed.append(1)
        return real_parse(*a, **k)

    def resolve(self, ctx, dom):
        resolved.append(dom.name)
        return real_resolve(self, ctx, dom)
    monkeypatch.setattr(domxml, "parse_domain", parse_domain)
    monkeypatch.setattr(rbdvd.RBDVirtualDomain, "_resolve_disks", resolve)
    assert w.run("migrate_from", meta={"migrate_source": "node1", "on_node": "node2"}) == 0, \
        w.err
    assert (len(parsed), resolved) == (1, [])
    assert (w.tmp / "rsctmp" / "vmceph-RBDVirtualDomain-vm1.state").read_text().startswith(
        "name=vm1\nuuid=8a5b3c2d-")


MIGRATE_FROM = """
import io, json, sys
sys.path.append("/usr/lib/python3/dist-packages")   # as the agent, run with -S, does
from vmceph import ocf
from vmceph.rbdvd import RBDVirtualDomain
err = io.StringIO()
rc = ocf.run(RBDVirtualDomain(), ["RBDVirtualDomain", "migrate_from"], json.loads(sys.argv[1]),
             io.StringIO(), err)
print(json.dumps({"rc": rc, "err": err.getvalue()[-2000:], "loaded": sorted(
    m for m in ("rados", "rbd", "vmceph.ceph", "vmceph.cluster", "vmceph.safety", "socket",
                "subprocess", "vmceph.disks") if m in sys.modules)}))
"""


def test_migrate_from_imports_no_ceph_and_no_cluster_module(tmp_path):
    """migrate_from (no node_addresses, membership or utilization to set) loads neither
    Ceph's bindings nor vmceph.cluster: run in a fresh interpreter against libvirt's
    in-process test driver, whose domain 'test' runs (it has 'arrived')."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("libvirt")
    config = tmp_path / "vm1.xml"
    config.write_text("<domain type='test'><name>test</name>"
                      "<uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid></domain>")
    env = {"OCF_RESOURCE_INSTANCE": "vm1", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_config": str(config), "OCF_RESKEY_hypervisor": "test:///default",
           "OCF_RESKEY_CRM_meta_migrate_source": "node1",
           "OCF_RESKEY_CRM_meta_migrate_target": "node2",
           "OCF_RESKEY_ceph_conf": str(tmp_path / "ceph.conf"),
           "OCF_RESKEY_ceph_keyring": str(tmp_path / "keyring")}
    (tmp_path / "ceph.conf").write_text("[global]\nmon_host = 10.0.0.1\n")
    (tmp_path / "keyring").write_text("[client.vmceph]\nkey = x\n")
    lib = str(Path(__file__).resolve().parents[2] / "lib")
    r = subprocess.run([sys.executable, "-S", "-c", MIGRATE_FROM, json.dumps(env)],
                       capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": lib, "PATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["rc"], out["loaded"]) == (0, []), out["err"]
    assert (tmp_path / "vmceph-RBDVirtualDomain-vm1.state").read_text().startswith(
        "name=test\nuuid=6695eb01-")


# --------------------------------------------------------------------- head start

def _crm_mon_marking(w, mark):
    """crm_mon as _pacemaker_tools sets it up, touching ``mark`` when it runs."""
    import test_cluster
    sample = w.tmp / "crm_mon.xml"
    sample.write_text(test_cluster.CRM_MON)
    w.bin.add("crm_mon", "touch '%s'; cat '%s'" % (mark, sample))


def test_cluster_view_and_ceph_connection_begin_while_validate_parses(w, monkeypatch):
    """migrate_to's slow asks begin during validate, before the domain is parsed and its
    disks resolved: crm_mon has run and a Ceph session exists by the time _domain
    returns (it waits at most 5 s for them). Begun by migrate_to itself, as before, they
    would not: the test fails."""
    _pacemaker_tools(w, "green")
    mark = w.tmp / "crm_mon-ran"
    _crm_mon_marking(w, mark)
    assert w.start() == 0, w.err
    mark.unlink(missing_ok=True)
    sessions = len(w.ceph.sessions)
    seen = []
    real = rbdvd.RBDVirtualDomain._domain

    def _domain(self, ctx, resolve=True):
        dom = real(self, ctx, resolve)
        if ctx.action == "migrate_to" and not seen:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5.0 and not (
                    mark.exists() and len(w.ceph.sessions) > sessions):
                time.sleep(0.01)
            seen.append((mark.exists(), len(w.ceph.sessions) - sessions))
        return dom
    monkeypatch.setattr(rbdvd.RBDVirtualDomain, "_domain", _domain)
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 0, w.err
    assert seen == [(True, 1)]     # one session: the early one is the one gather used
    assert len(w.ceph.sessions) == sessions + 1
    assert w.node2.running("vm1") and not w.node1.running("vm1")
    assert all(r.state == "shutdown" for r in w.ceph.sessions)


def _all_closed(w, timeout=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if all(r.state == "shutdown" for r in w.ceph.sessions):
            return True
        time.sleep(0.01)
    return False


def test_a_migrate_to_refused_before_gathering_closes_the_early_session(w):
    """Not running here: refused before any decision; the session begun during validate
    is closed, not left to the process's exit."""
    _pacemaker_tools(w, "green")
    sessions = len(w.ceph.sessions)
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == 1
    assert "not running on this node" in w.reason
    assert len(w.ceph.sessions) == sessions + 1
    assert _all_closed(w)


def test_a_validation_failure_after_the_head_start_closes_its_session(w, monkeypatch):
    _pacemaker_tools(w, "green")
    assert w.start() == 0, w.err

    def broken(self, ctx, resolve=True):
        raise ocf.ConfigError("domain configuration broken on purpose")
    monkeypatch.setattr(rbdvd.RBDVirtualDomain, "_domain", broken)
    assert w.run("migrate_to", meta={"migrate_target": "node2"}) == ocf.OCF_ERR_CONFIGURED
    assert _all_closed(w)
    assert w.node1.running("vm1") and not w.node1.called("migrateToURI3")


def test_head_start_abandoned_while_connecting_closes_the_session_when_it_connects(
        monkeypatch):
    """abandon() before the connection is made: the connecting thread closes it."""
    import threading
    gate = threading.Event()

    class Session:
        closed = False

        def close(self):
            Session.closed = True
    made = []

    def connect(p, deadline, log):
        gate.wait(5)
        made.append(Session())
        return made[-1], None
    monkeypatch.setattr(facts, "_connect", connect)
    monkeypatch.setattr(facts, "cluster_view", lambda *a, **k: ({}, "n1", "test"))
    h = facts.HeadStart(object(), ocf.Deadline(10.0, margin_s=0), None, "n1")
    h.abandon()
    gate.set()
    assert h.ceph.result(5) == (None, "abandoned")
    assert made and Session.closed
