"""A libvirtd restart must not restart the guests (issue 13).

When libvirtd cannot be asked, the recurring monitor answers from the domain's QEMU process
like the probe does (DESIGN: "If libvirt cannot be reached, the monitor (probe or recurring)
looks for the QEMU process of this domain and answers from it ... it never answers 'not
running' on a guess"): success while it runs, a failure (never "not running") when it does
not. A failed recurring monitor makes Pacemaker stop and start the VM, which is what an
upgrade of libvirt must not do to every guest of the node.
"""

import pytest

from test_agent_flows import World
from vmceph import ocf, virt


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def _down(w, monkeypatch, qemu_pid):
    w.node1.reachable = False
    looked = []

    def qemu_pid_of(name, run_dir=None):
        looked.append(name)
        return qemu_pid
    monkeypatch.setattr(virt, "qemu_pid_of", qemu_pid_of)
    return looked


@pytest.mark.parametrize("interval", [10000, 60000])
def test_recurring_monitor_succeeds_while_the_qemu_runs(w, monkeypatch, interval):
    assert w.start() == 0
    looked = _down(w, monkeypatch, 4242)
    assert w.run("monitor", interval=interval) == ocf.OCF_SUCCESS, w.err
    assert looked == ["vm1"]
    log = w.logfile.read_text()
    assert "libvirt unreachable" in log and "QEMU of domain vm1 runs (pid 4242)" in log
    # nothing was done to the guest meanwhile
    assert w.node1.running("vm1")


def test_recurring_monitor_fails_when_no_qemu_runs(w, monkeypatch):
    assert w.start() == 0
    looked = _down(w, monkeypatch, None)
    rc = w.run("monitor", interval=10000)
    assert rc == ocf.OCF_ERR_GENERIC and rc != ocf.OCF_NOT_RUNNING
    assert looked == ["vm1"]
    assert "libvirt unreachable" in w.reason and "no QEMU process of it" in w.reason


def test_recurring_monitor_on_a_libvirt_call_timeout_answers_from_qemu(w, monkeypatch):
    """A libvirtd that accepts the connection but does not answer (restarting, busy) is
    'unreachable' too (virt.CallTimeout)."""
    assert w.start() == 0

    def slow(uri, name, uuid, budget):
        raise virt.CallTimeout("libvirt did not answer state within 1.0 s")
    monkeypatch.setattr(virt, "quick_state", slow)
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: 4242)
    assert w.run("monitor", interval=10000) == ocf.OCF_SUCCESS
    monkeypatch.setattr(virt, "qemu_pid_of", lambda name, run_dir=None: None)
    assert w.run("monitor", interval=10000) == ocf.OCF_ERR_GENERIC


def test_probe_unchanged(w, monkeypatch):
    assert w.start() == 0
    _down(w, monkeypatch, 4242)
    assert w.run("monitor") == ocf.OCF_SUCCESS
    _down(w, monkeypatch, None)
    assert w.run("monitor") == ocf.OCF_NOT_RUNNING


def test_monitor_asks_libvirt_again_once_it_is_back(w, monkeypatch):
    assert w.start() == 0
    looked = _down(w, monkeypatch, 4242)
    assert w.run("monitor", interval=10000) == ocf.OCF_SUCCESS
    w.node1.reachable = True
    assert w.run("monitor", interval=10000) == ocf.OCF_SUCCESS
    assert looked == ["vm1"]            # the second answer came from libvirt
    w.node1.power_off(w.node1.guest("vm1"), 2)   # VIR_DOMAIN_SHUTOFF_DESTROYED
    assert w.run("monitor", interval=10000) == ocf.OCF_NOT_RUNNING
