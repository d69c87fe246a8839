"""Recovery only on proof, against the real lab (issue 10, item 7).

- a live writer on a member node (a QEMU holding the exclusive lock) makes a start
  elsewhere refuse, and no blocklist entry is added;
- an agent SIGKILLed while libvirt creates the domain, or between the create and the
  resume (the 200-fault soak's "agent-kill-start"), followed by the stop Pacemaker runs at
  once: nothing of the VM is left running on the node, and it starts on another node;
- a watcher holding no lock on a member node (a process that opened the image read-write
  and never wrote) is refused at once while it answers a notification, and waited out
  once SIGKILLed (its watch lingers until Ceph's watch timeout), nothing blocklisted;
- a QEMU a start finds already running is recorded: SIGKILLed, its stop releases what it
  left, and the VM starts on another node;
- a live, not fenced client (a librbd writer process on node 2, declared fenced through the
  test-only static membership: the agent's rule is what is tested, not Pacemaker's) is
  blocklisted by a start on node 1; the agent waits for the OSD map carrying the entry
  (logged with its duration) before breaking the lock; after the new VM's first write the
  old client cannot complete a single write.
"""

import os
import re
import signal
import time

import pytest

from conftest import qemu_pid

OCF_SUCCESS, OCF_ERR_GENERIC = 0, 1

WRITER = r'''
import sys, time, rados, rbd
image, log = sys.argv[1], sys.argv[2]
c = rados.Rados(conffile="/etc/ceph/ceph.conf", rados_id="vmceph",
                conf={"keyring": "/etc/ceph/ceph.client.vmceph.keyring",
                      "rados_osd_op_timeout": "5", "rados_mon_op_timeout": "5"})
c.connect()
io = c.open_ioctx("rbd")
img = rbd.Image(io, image)
img.write(b"\x11" * 4096, 0)          # the first write takes the exclusive lock
with open(log, "a") as f:
    f.write("ready %.3f\n" % time.time())
k = 1
while True:
    try:
        img.write(b"\x33" * 4096, 4096 * (k % 64))
        img.flush()
        line = "ok %.3f\n" % time.time()
    except Exception as e:
        line = "fail %.3f %s\n" % (time.time(), type(e).__name__)
    with open(log, "a") as f:
        f.write(line)
    k += 1
    time.sleep(0.2)
'''


def _blocklist(lab):
    return lab.ceph(1, "osd", "blocklist", "ls")


def test_live_writer_on_a_member_is_refused_and_never_blocklisted(lab, make_vm):
    vm = make_vm(disks=1)
    assert vm.agent(2, "start").rc == OCF_SUCCESS
    try:
        lab.guest_write(2, vm.name, 0)
        holder = vm.clients(0)["lockers"]
        assert [lk["addr"].split(":")[0] for lk in holder] == [lab.node_ip(2)]
        before = _blocklist(lab)
        r = vm.agent(1, "start", timeout_ms=30000)
        print("\nstart on node1 while node2's QEMU writes: rc %d in %.1f s: %s"
              % (r.rc, r.elapsed, r.reason))
        assert r.rc == OCF_ERR_GENERIC, r
        assert lab.node_name(2) in r.reason and "live cluster member" in r.reason, r.reason
        after = _blocklist(lab)
        assert holder[0]["addr"] not in after
        assert after.count(lab.node_ip(2)) == before.count(lab.node_ip(2))
        assert vm.running_on() == [2]
    finally:
        vm.agent(2, "stop")


OPENER = r'''
import sys, time, rados, rbd
image, log = sys.argv[1], sys.argv[2]
c = rados.Rados(conffile="/etc/ceph/ceph.conf", rados_id="vmceph",
                conf={"keyring": "/etc/ceph/ceph.client.vmceph.keyring"})
c.connect()
img = rbd.Image(c.open_ioctx("rbd"), image)   # read-write: a watch; no write, so no lock
with open(log, "a") as f:
    f.write("ready %.3f\n" % time.time())
while True:
    time.sleep(60)
'''


def test_a_lockless_watcher_on_a_member_is_refused_while_alive_and_waited_out_once_dead(
        lab, make_vm, shared_dir):
    """The lingering watch (docs/reliability.md, seed 1205, faults 14 and 26: an
    interrupted migration's target QEMU, destroyed, kept its watch for Ceph's 30 s watch
    timeout, and every start elsewhere refused it until the VM was banned everywhere).
    A process on node 2 opens the image read-write and never writes: a watch, no lock.
    While it lives, it acknowledges the agent's notification, and a start on node 1
    refuses it at once as a live member's writer, blocklisting nothing. Once it is
    SIGKILLed, its watch lingers and answers nothing: a start on node 1 looks again until
    the watch is gone and starts, with nothing blocklisted."""
    _lockless_watcher_refused_alive_waited_out_dead(lab, make_vm, shared_dir, 2)


def test_a_lockless_watcher_on_this_node_is_refused_while_alive_and_waited_out_once_dead(
        lab, make_vm, shared_dir):
    """The same on the starting node itself (docs/reliability.md, seed 1207, fault 39: the
    stop of node3 destroyed the incoming QEMU of a migration whose source had died, and
    node3's next start refused its lingering watch as "open read-write on this node by a
    client that is not this domain"): refused at once while alive, waited out once dead."""
    _lockless_watcher_refused_alive_waited_out_dead(lab, make_vm, shared_dir, 1)


def _lockless_watcher_refused_alive_waited_out_dead(lab, make_vm, shared_dir, node):
    vm = make_vm(disks=1)
    script = shared_dir / "opener.py"
    script.write_text(OPENER)
    log = shared_dir / ("%s-opener.log" % vm.name)
    log.write_text("")
    name = "opener-" + vm.name
    lab.spawn(node, name, "exec python3 %s %s %s" % (script, vm.images[0], log))
    before = _blocklist(lab)
    try:
        end = time.monotonic() + 60
        while "ready" not in log.read_text():
            assert time.monotonic() < end, "the opener on node %d did not start" % node
            time.sleep(0.2)
        c = vm.clients(0)
        assert [w["addr"].split(":")[0] for w in c["watchers"]] == [lab.node_ip(node)], c
        assert c["lockers"] == [], c
        r = vm.agent(1, "start", timeout_ms=90000)
        print("\nstart on node1 beside a live lockless watcher on node%d: rc %d in %.1f s: %s"
              % (node, r.rc, r.elapsed, r.reason))
        assert r.rc == OCF_ERR_GENERIC, r
        if node == 1:
            assert "open read-write on this node" in r.reason, r.reason
            assert "not this domain" in r.reason, r.reason
        else:
            assert "live cluster member" in r.reason, r.reason
            assert lab.node_name(node) in r.reason, r.reason
        assert "acknowledged a notification" in r.stderr, r.stderr
        assert r.elapsed < 20, r        # not the 35 s wait for a dead client's watch
        assert 1 not in vm.running_on()
        os.kill(lab.daemon_pid(node, name), signal.SIGKILL)
        killed = time.monotonic()
        lingering = vm.clients(0)["watchers"]
        r = vm.agent(1, "start", timeout_ms=90000)
        print("start on node1 right after the opener on node%d was SIGKILLed (watchers then: "
              "%s): rc %d in %.1f s, %.1f s after the kill" % (node, lingering, r.rc,
                                                              r.elapsed,
                                                              time.monotonic() - killed))
        assert r.rc == OCF_SUCCESS, r
        if lingering:   # Ceph kept the dead client's watch: the start waited it out
            assert "holds no lock; looking again" in r.stderr, r.stderr
            assert "acknowledged a notification" not in r.stderr, r.stderr
        assert vm.running_on() == [1]
        after = _blocklist(lab)
        assert after.count(lab.node_ip(node)) == before.count(lab.node_ip(node)), after
    finally:
        pid = lab.daemon_pid(node, name)
        if pid:
            os.kill(pid, signal.SIGKILL)
        vm.agent(1, "stop")


def test_declared_fenced_live_client_is_cut_off_after_the_osd_map_wait(lab, make_vm,
                                                                       shared_dir):
    vm = make_vm(disks=1)
    script = shared_dir / "h3_writer.py"
    script.write_text(WRITER)
    log = shared_dir / ("%s-writer.log" % vm.name)
    log.write_text("")
    lab.spawn(2, "h3writer-" + vm.name, "exec python3 %s %s %s" % (script, vm.images[0], log))
    try:
        end = time.monotonic() + 60
        while "ready" not in log.read_text():
            assert time.monotonic() < end, "the writer on node 2 did not start"
            time.sleep(0.2)
        time.sleep(1.0)
        held = vm.clients(0)["lockers"]
        assert [lk["addr"].split(":")[0] for lk in held] == [lab.node_ip(2)]
        old_addr = held[0]["addr"]
        fenced = vm.agent.params["membership"].replace("%s=member" % lab.node_name(2),
                                                       "%s=fenced" % lab.node_name(2))
        r = vm.agent(1, "start", extra={"membership": fenced, "blocklist_expire": "600"})
        assert r.rc == OCF_SUCCESS, r
        m = re.search(r"waited ([0-9.]+) s for the OSD map carrying the blocklist", r.stderr)
        assert m, r.stderr
        bl = r.stderr.index("blocklisted %s" % old_addr)
        assert bl < m.start() < r.stderr.index("broke the exclusive lock"), r.stderr
        print("\nOSD map wait after blocklisting %s: %s s" % (old_addr, m.group(1)))
        assert old_addr in _blocklist(lab)
        lab.guest_write(1, vm.name, 0)
        first_write = time.time()
        time.sleep(3.0)
        lines = log.read_text().split("\n")
        oks_after = [l for l in lines if l.startswith("ok ") and float(l.split()[1]) > first_write]
        fails = [l for l in lines if l.startswith("fail ")]
        print("old client after the new VM's first write: %d ok, %d failed (%s)"
              % (len(oks_after), len(fails), fails[:1]))
        assert oks_after == [], oks_after
        assert fails, "the old client kept writing? %s" % lines[-5:]
    finally:
        pid = lab.daemon_pid(2, "h3writer-" + vm.name)
        if pid:
            os.kill(pid, signal.SIGKILL)
        vm.agent(1, "stop")
        try:
            lab.ceph(1, "osd", "blocklist", "rm", old_addr)
        except Exception:
            pass


def test_member_lock_holder_whose_watch_is_gone_is_refused_not_blocklisted(lab, make_vm):
    """A live QEMU on a member node holds the lock, but its watch is gone: node 2 is cut
    off (switch port down), and after osd_client_watch_timeout (30 s) the OSDs drop the
    watch while the QEMU lives on. Under the eager rule this client was blocklisted; now a
    start on node 1 looks again within its deadline, refuses, says so, blocklists nothing."""
    vm = make_vm(disks=1)
    assert vm.agent(2, "start").rc == OCF_SUCCESS
    lab.guest_write(2, vm.name, 0)
    held = vm.clients(0)["lockers"]
    assert [lk["addr"].split(":")[0] for lk in held] == [lab.node_ip(2)]
    before = _blocklist(lab)
    lab.partition(2)
    try:
        end = time.monotonic() + 120
        while True:
            try:
                c = vm.clients(0)
            except Exception as e:  # while the OSDs mark node 2's OSD down and re-peer
                c = {"error": str(e)[-200:]}
            if c.get("lockers") and not [w for w in c["watchers"]
                                         if w["addr"] == held[0]["addr"]]:
                break
            assert time.monotonic() < end, "node 2's watch did not expire: %s" % c
            time.sleep(2)
        print("\nnode 2's QEMU holds the lock with no watch: %s" % c)
        r = vm.agent(1, "start", timeout_ms=60000)
        print("start on node1: rc %d in %.1f s: %s" % (r.rc, r.elapsed, r.reason))
        assert r.rc == OCF_ERR_GENERIC, r
        assert "no watch" in r.reason and "live cluster member" in r.reason, r.reason
        assert "looking again" in r.stderr and "none did while looking again" in r.reason, r
        after = _blocklist(lab)
        assert held[0]["addr"] not in after
        assert after.count(lab.node_ip(2)) == before.count(lab.node_ip(2))
        assert 1 not in vm.running_on()
    finally:
        lab.heal(2)
    lab.wait_ceph_healthy(timeout=180)
    assert vm.running_on() == [2]
    vm.agent(2, "stop")


# Runs the agent with virt.Hypervisor.create wrapped so that the process SIGKILLs itself
# in the middle of the start: "during" 50 ms after the createXML call left for libvirtd
# (libvirtd finishes it for a client that is gone), "after" as soon as it returned (the
# domain is paused, never resumed). No hook in the agent: the wrapper patches the library.
KILL_IN_CREATE = r"""
import os, runpy, signal, sys, threading, time
mode, agent = sys.argv[1], sys.argv[2]
sys.argv = [agent] + sys.argv[3:]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(agent))),
                                "lib"))
from vmceph import virt
real = virt.Hypervisor.create
def create(self, xml, paused=False, cap=120.0):
    if mode == "after":
        real(self, xml, paused, cap)
    else:
        threading.Thread(target=real, args=(self, xml, paused, cap), daemon=True).start()
        time.sleep(0.05)
    sys.stderr.write("KILLED %s the create\n" % mode)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
virt.Hypervisor.create = create
runpy.run_path(agent, run_name="__main__")
"""


@pytest.mark.parametrize("mode", ["during", "after"])
def test_agent_killed_in_the_create_then_stopped_leaves_nothing_running(lab, make_vm,
                                                                        shared_dir, mode):
    vm = make_vm(disks=1)
    script = shared_dir / "kill_in_create.py"
    script.write_text(KILL_IN_CREATE)
    r = vm.agent(1, "start", argv_prefix=["/usr/bin/python3", str(script), mode])
    assert "KILLED %s the create" % mode in r.stderr, r
    assert r.rc != OCF_SUCCESS, r
    t0 = time.monotonic()
    s = vm.agent(1, "stop")            # what Pacemaker does next, at once
    print("\nkilled %s the create; the stop: rc %d in %.1f s; %s" % (
        mode, s.rc, time.monotonic() - t0,
        [ln for ln in s.stderr.splitlines() if "released" in ln or "died between" in ln
         or "never resumed" in ln]))
    assert s.rc == OCF_SUCCESS, s
    # whatever libvirt was doing for the dead start has long finished (a create takes
    # ~0.5 s here): nothing of the VM may run on node 1 now
    time.sleep(3.0)
    assert vm.running_on() == [], "a domain of the VM runs after its stop said stopped"
    assert not vm.clients(0)["watchers"], vm.clients(0)
    r2 = vm.agent(2, "start", timeout_ms=30000)
    try:
        assert r2.rc == OCF_SUCCESS, r2
    finally:
        vm.agent(2, "stop")


def test_a_qemu_a_start_finds_running_is_recorded_and_released_once_killed(lab, make_vm):
    """The 200-fault soak (docs/reliability.md, seed 1206, faults 159-160): an agent
    SIGKILLed in migrate_to left libvirt to finish the migration; Pacemaker started the VM
    on the target, where the start found it running ("already-running"), and nothing had
    recorded that QEMU's client. Killed next, it left its lock, its stop released nothing,
    and every start refused the lock until an operator came. Here: a QEMU on node 1 whose
    record is gone (as an unrecorded arrival's), a start that finds it running, a SIGKILL,
    the stop on node 1, then a start on node 2 that must find nothing left."""
    vm = make_vm(disks=1)
    assert vm.agent(1, "start").rc == OCF_SUCCESS
    try:
        lab.guest_write(1, vm.name, 0)                     # the QEMU takes the lock
        record = "/run/resource-agents/vmceph-RBDVirtualDomain-%s.clients" % vm.agent.instance
        lab.run(1, ["rm", "-f", record])
        assert lab.run(1, ["test", "-e", record], check=False).returncode != 0
        r = vm.agent(1, "start")
        assert r.rc == OCF_SUCCESS and "already-running" in r.stderr, r
        assert lab.run(1, ["test", "-e", record], check=False).returncode == 0, \
            "the start that found the QEMU running recorded nothing"
        held = vm.clients(0)["lockers"]
        assert [lk["addr"].split(":")[0] for lk in held] == [lab.node_ip(1)], held
        os.kill(qemu_pid(lab, 1, vm.name), signal.SIGKILL)
        time.sleep(0.5)
        s = vm.agent(1, "stop")
        print("\nstop after the SIGKILL: rc %d in %.1f s; %s" % (
            s.rc, s.elapsed, [ln for ln in s.stderr.splitlines() if "released" in ln]))
        assert s.rc == OCF_SUCCESS, s
        assert "released 1 client instance(s)" in s.stderr, s.stderr
        assert vm.clients(0)["lockers"] == []
        r = vm.agent(2, "start", timeout_ms=90000)
        print("start on node 2 then: rc %d in %.1f s" % (r.rc, r.elapsed))
        assert r.rc == OCF_SUCCESS, r
        assert vm.running_on() == [2]
    finally:
        vm.destroy_everywhere()
