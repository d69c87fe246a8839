"""Recovery only on proof, with membership from a real Pacemaker (issue 10, item 7).

Its own lab, with corosync + Pacemaker and a fence device (named after VMCEPH_IT_LAB plus
"p", so it never collides with the session's `lab`). The VMs are not Pacemaker resources:
the agent is run directly on the nodes, with no `membership` parameter, so it asks
crm_mon, cibadmin and stonith_admin exactly as in production.

- a node that was powered off and fenced (fencing history) has its dead QEMU's client
  blocklisted and its lock broken by a start elsewhere, after the OSD map wait;
- a node in maintenance whose cluster stack was stopped cleanly (offline, clean, not
  fenced) still runs its VM: a start elsewhere refuses and blocklists nothing;
- a node power-fenced and booted again, a live member once more, whose dead QEMUs left
  their locks (seed 1208's fault 58): a start on that node recovers its earlier boot's
  client at once; a start elsewhere refuses the member's client until the node's first
  probe attests it dead, then recovers exactly that client.
"""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import LAB_NAME, ROOT, VM, _lab_prerequisites

OCF_SUCCESS, OCF_ERR_GENERIC = 0, 1


@pytest.fixture(scope="module")
def plab():
    why = _lab_prerequisites()
    if why:
        pytest.skip("INTEGRATION TESTS NOT RUN: " + why)
    from vmlab import Lab
    from vmlab.owner import owning
    lab = Lab(name=LAB_NAME + "p", nodes=3, pacemaker=True, node_prefix="node",
              token_ms=1000, project_root=str(ROOT), mgr=False)
    with owning(lab):
        lab.down()
        lab.up()
        try:
            lab.wait_fence_device(timeout=120)
            lab.wait_pacemaker_online(3, timeout=120)
            yield lab
        finally:
            lab.down()


@pytest.fixture
def pvm(plab):
    shared = Path(plab.state_dir) / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    addrs = " ".join("%s=%s" % (plab.node_name(i), plab.node_ip(i)) for i in plab.indexes)
    made = []

    def make():
        vm = VM(plab, shared, addrs, "pv%d" % (len(made) + int(time.time()) % 10000), 1,
                membership="")
        made.append(vm)
        return vm
    yield make
    for vm in made:
        try:
            vm.cleanup()
        except Exception as e:  # a node may be down
            print("cleanup of %s: %s" % (vm.name, e))


def _blocklist(lab, i=1):
    return lab.ceph(i, "osd", "blocklist", "ls")


def _crash_and_wait_fenced(lab, i, timeout=120):
    t = time.time()
    lab.crash(i)
    end = time.monotonic() + timeout
    while not lab.fenced_since(i, t):
        assert time.monotonic() < end, "%s was not fenced" % lab.node_name(i)
        time.sleep(0.5)


def test_fenced_node_s_client_recovered_from_the_fencing_history(plab, pvm):
    vm = pvm()
    r = vm.agent(3, "start")
    assert r.rc == OCF_SUCCESS, r
    plab.guest_write(3, vm.name, 0)
    held = vm.clients(0)["lockers"]
    assert [lk["addr"].split(":")[0] for lk in held] == [plab.node_ip(3)]
    _crash_and_wait_fenced(plab, 3)
    r = vm.agent(1, "start", extra={"blocklist_expire": "600"})
    print("\nstart on node1 after node3 was fenced: rc %d in %.2f s" % (r.rc, r.elapsed))
    assert r.rc == OCF_SUCCESS, r
    assert "start decision for %s: recover-then-start" % vm.name in r.stderr, r.stderr
    m = re.search(r"waited ([0-9.]+) s for the OSD map carrying the blocklist", r.stderr)
    assert m, r.stderr
    print("OSD map wait: %s s" % m.group(1))
    assert "node node3: node fenced (fenced at " in r.stderr, r.stderr
    assert held[0]["addr"] in _blocklist(plab)
    plab.guest_write(1, vm.name, 0)
    assert vm.agent(1, "stop").rc == OCF_SUCCESS
    plab.start_node(3)
    plab.wait_pacemaker_online(3, timeout=180)


def test_a_rebooted_node_s_dead_qemu_locks_are_recovered_on_its_own_proof(plab, pvm):
    """Two VMs on node3, each QEMU holding its image's lock; node3 is powered off, fenced
    and booted again (a new boot id, the state directory empty, /var/lib/vmceph kept),
    then is a live member. Its dead QEMUs' locks are a member's: without proof, refused.
    - here = started again on node3: its record of the earlier boot proves the client
      dead; recovered and started at once;
    - away = started on node1: refused (a live member's client) until node3's probe
      attests the client dead (vmceph-dead-<vm>), then recovered and started.
    Placed before the maintenance test, which leaves node2's cluster stack stopped: after
    it, node1 alone has no quorum to fence node3 (seen in the first full run)."""
    here, away = pvm(), pvm()
    on3 = {"on_node": "node3"}
    held = {}
    for vm in (here, away):
        r = vm.agent(3, "start", meta=on3)
        assert r.rc == OCF_SUCCESS, r
        plab.guest_write(3, vm.name, 0)
        held[vm.name] = vm.clients(0)["lockers"][0]["addr"]
        assert held[vm.name].split(":")[0] == plab.node_ip(3), held
        copy = plab.run(3, ["cat", "/var/lib/vmceph/vmceph-RBDVirtualDomain-%s.clients"
                            % vm.name]).stdout
        assert "boot=" in copy and "node=node3" in copy and held[vm.name] in copy, copy
    boot_before = plab.run(3, ["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip()
    _crash_and_wait_fenced(plab, 3)
    plab.start_node(3)
    plab.wait_pacemaker_online(3, timeout=180)
    assert plab.run(3, ["cat", "/proc/sys/kernel/random/boot_id"]).stdout.strip() != \
        boot_before, "the lab did not give node3 a new boot id"
    assert plab.pacemaker_nodes(1).get("node3") == "online"
    for vm in (here, away):
        assert [lk["addr"] for lk in vm.clients(0)["lockers"]] == [held[vm.name]]

    r = here.agent(3, "start", meta=on3, timeout_ms=60000)
    print("\nstart on node3 after its reboot: rc %d in %.2f s" % (r.rc, r.elapsed))
    assert r.rc == OCF_SUCCESS, r
    assert "before the node rebooted" in r.stderr, r.stderr
    assert held[here.name] in _blocklist(plab)
    plab.guest_write(3, here.name, 0)

    r = away.agent(1, "start", timeout_ms=30000)
    print("start on node1 before node3's probe: rc %d in %.2f s: %s" % (r.rc, r.elapsed,
                                                                         r.reason))
    assert r.rc == OCF_ERR_GENERIC, r
    assert "live cluster member" in r.reason, r.reason
    assert held[away.name] not in _blocklist(plab)
    p = away.agent(3, "monitor", meta=on3)
    assert p.rc == 7, p                                           # OCF_NOT_RUNNING
    word = plab.run(1, ["crm_mon", "-1", "-A", "--output-as=xml"]).stdout
    assert 'name="vmceph-dead-%s" value="%s"' % (away.name, held[away.name]) in word, word
    r = away.agent(1, "start", timeout_ms=60000)
    print("start on node1 after node3's probe: rc %d in %.2f s" % (r.rc, r.elapsed))
    assert r.rc == OCF_SUCCESS, r
    assert "attested dead by node3" in r.stderr, r.stderr
    assert held[away.name] in _blocklist(plab)
    plab.guest_write(1, away.name, 0)
    for vm, node in ((here, 3), (away, 1)):
        assert vm.agent(node, "stop", meta={"on_node": "node%d" % node}).rc == OCF_SUCCESS


def test_node_in_maintenance_with_stack_stopped_keeps_its_vm(plab, pvm):
    vm = pvm()
    r = vm.agent(2, "start")
    assert r.rc == OCF_SUCCESS, r
    plab.guest_write(2, vm.name, 0)
    held = vm.clients(0)["lockers"]
    plab.run(1, ["crm_attribute", "-N", "node2", "-n", "maintenance", "-v", "true"])
    for daemon in ("pacemaker", "corosync"):
        pid = plab.daemon_pid(2, daemon)
        assert pid, daemon
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 60
        while plab.daemon_pid(2, daemon):
            assert time.monotonic() < end, "%s of node2 did not stop" % daemon
            time.sleep(0.3)
    end = time.monotonic() + 60
    while plab.pacemaker_nodes(1).get("node2") != "offline":
        assert time.monotonic() < end, plab.pacemaker_nodes(1)
        time.sleep(0.5)
    assert vm.running_on() == [2], "the VM must still run on node2"
    before = _blocklist(plab)
    r = vm.agent(1, "start", timeout_ms=30000)
    print("\nstart on node1 while node2 (maintenance, stack stopped) runs the VM: rc %d: %s"
          % (r.rc, r.reason))
    assert r.rc == OCF_ERR_GENERIC, r
    assert "maintenance" in r.reason, r.reason
    assert held[0]["addr"] not in _blocklist(plab)
    assert _blocklist(plab).count(plab.node_ip(2)) == before.count(plab.node_ip(2))
    assert vm.running_on() == [2]
    plab.guest_write(2, vm.name, 0)     # node2's guest still writes

