"""ocf:vmceph:RBDVirtualDomain against the real thing: Ceph (3 monitors, cephx, a
`profile rbd` user), libvirtd + QEMU (TCG) on three namespaced nodes with distinct
addresses. Cluster facts come from the `membership` parameter (no Pacemaker here; the e2e
tests show the same decisions with real Pacemaker fencing).
"""

import json
import os
import signal
import time

import pytest

from conftest import libvirtd_start, libvirtd_stop, qemu_pid

pytestmark = pytest.mark.lab

OCF_SUCCESS, OCF_ERR_GENERIC, OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 1, 5, 6, 7


def test_start_monitor_stop_two_rbd_disks(lab, make_vm):
    vm = make_vm(disks=2)
    a = vm.agent
    r = a(1, "monitor")
    assert r.rc == OCF_NOT_RUNNING, r                      # probe before start
    r = a(1, "start")
    assert r.rc == OCF_SUCCESS, r
    assert vm.running_on() == [1]
    assert a(1, "monitor", interval_ms=10000).rc == OCF_SUCCESS
    for k in range(2):
        lab.guest_write(1, vm.name, disk_index=k)
        assert vm.writer_ips(k) == [lab.node_ip(1)], "the writer of each image is node 1's QEMU"
        lockers = vm.clients(k)["lockers"]
        assert [l["addr"].split(":")[0] for l in lockers] == [lab.node_ip(1)]
    # deep monitors: quorum (10), sole writer (20)
    assert a(1, "monitor", interval_ms=10000, depth=10).rc == OCF_SUCCESS
    r = a(1, "monitor", interval_ms=10000, depth=20)
    assert r.rc == OCF_SUCCESS, r
    r = a(1, "start")
    assert r.rc == OCF_SUCCESS and "already running" in r.stderr, r    # idempotent
    r = a(1, "stop")
    assert r.rc == OCF_SUCCESS, r
    assert vm.running_on() == []
    assert a(1, "monitor", interval_ms=10000).rc == OCF_NOT_RUNNING
    for k in range(2):
        assert vm.clients(k)["watchers"] == []
    assert a(1, "stop").rc == OCF_SUCCESS                 # stopping a stopped resource


def test_start_refused_while_another_host_has_the_image_open(lab, make_vm):
    vm = make_vm(disks=2)
    # node 2 runs the same domain behind the cluster's back (plain libvirt, no agent)
    lab.run(2, ["virsh", "-c", "qemu:///system", "create", str(vm.config)], timeout=60)
    lab.guest_write(2, vm.name, 0)
    r = vm.agent(1, "start")
    assert r.rc == OCF_ERR_GENERIC, r
    watcher = [w for w in vm.clients(0)["watchers"]][0]
    for part in (vm.spec(0), lab.node_name(2), lab.node_ip(2), "client.%d" % watcher["id"]):
        assert part in r.reason, (part, r.reason)
    assert vm.running_on() == [2], "no second QEMU was started on node 1"
    # and vmceph check tells the same, as JSON
    p = lab.run(1, ["/usr/bin/python3", "-m", "vmceph", "check", str(vm.config), "--json",
                    "--ceph-user", lab.ceph_user,
                    "--ceph-keyring", "/etc/ceph/ceph.client.%s.keyring" % lab.ceph_user,
                    "--node-addresses", vm.agent.params["node_addresses"],
                    "--membership", vm.agent.params["membership"]],
                env={"PYTHONPATH": str(os.path.join(os.path.dirname(vm.agent.path), "..", "lib"))},
                check=False, timeout=60)
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    assert report["decision"] == "refuse" and not report["may_start"]
    img = [i for i in report["images"] if i["image"] == vm.spec(0)][0]
    assert [w["node"] for w in img["watchers"]] == [lab.node_name(2)]
    assert [w["node_state"] for w in img["watchers"]] == ["member"]


def test_recovery_after_the_holder_was_killed(lab, make_vm):
    """Node 2's QEMU dies (as with its node) and Pacemaker has fenced node 2: start on
    node 1 blocklists the dead client and breaks its lock, so the new VM's first write does
    not wait ~30 s for librbd to time the dead holder out."""
    vm = make_vm(disks=1)
    assert vm.agent(2, "start").rc == OCF_SUCCESS
    lab.guest_write(2, vm.name, 0)
    dead = vm.clients(0)
    assert [l["addr"].split(":")[0] for l in dead["lockers"]] == [lab.node_ip(2)]
    os.kill(qemu_pid(lab, 2, vm.name), signal.SIGKILL)
    time.sleep(0.5)
    # the dead QEMU's watch lingers: that is what makes librbd alone stall
    assert lab.node_ip(2) in vm.writer_ips(0)
    fenced = vm.agent.params["membership"].replace("%s=member" % lab.node_name(2),
                                                   "%s=fenced" % lab.node_name(2))
    t0 = time.monotonic()
    r = vm.agent(1, "start", extra={"membership": fenced, "blocklist_expire": "600"})
    started = time.monotonic()
    assert r.rc == OCF_SUCCESS, r
    write_s = lab.guest_write(1, vm.name, 0)
    total = time.monotonic() - t0
    print(r.stderr)
    print("\nrecovery: start %.2f s (agent %.2f s), first write %.3f s, start->write %.2f s"
          % (started - t0, r.elapsed, write_s, total))
    assert r.rc == OCF_SUCCESS, r
    assert "blocklisted" in r.stderr and "broke the exclusive lock" in r.stderr, r.stderr
    # Behaviour, not speed (the speed is make bench's recovery figure): without the lock
    # break the first write waits for librbd to time the dead holder out, ~28 s; with it,
    # the write does not wait on the dead holder at all. 2 s was asserted here until the
    # CI-like run of 2026-12-01 23:15 took 3.68 s under load (two labs on two cores).
    assert write_s < 15.0, "the first write took %.2f s: it waited for the dead holder " \
        "(~28 s without the lock break)" % write_s
    blocklist = lab.ceph(1, "osd", "blocklist", "ls")
    assert dead["lockers"][0]["addr"] in blocklist
    now = vm.clients(0)
    assert [l["addr"].split(":")[0] for l in now["lockers"]] == [lab.node_ip(1)]
    assert vm.agent(1, "stop").rc == OCF_SUCCESS
    lab.ceph(1, "osd", "blocklist", "rm", dead["lockers"][0]["addr"])


def test_quorum_lost_start_fails_within_deadline_and_stop_still_works(lab, make_vm):
    running = make_vm(disks=1)
    assert running.agent(1, "start").rc == OCF_SUCCESS
    other = make_vm(disks=1)
    lab.stop_mon(2)
    lab.stop_mon(3)
    try:
        # The surviving monitor keeps answering with the old quorum until its lease runs out
        # (~10 s, docs/ceph-facts.md): wait until Ceph itself says there is no quorum.
        deadline = time.monotonic() + 60
        while lab.run(1, ["timeout", "5", "ceph", "--connect-timeout", "4", "quorum_status"],
                      check=False, timeout=10).returncode == 0:
            assert time.monotonic() < deadline, "quorum still reported 60 s after 2 of 3 mons stopped"
            time.sleep(1)
        r = other.agent(1, "start", timeout_ms=20000)
        print("\nstart without quorum: rc %d after %.1f s: %s" % (r.rc, r.elapsed, r.reason))
        assert r.rc == OCF_ERR_GENERIC, r
        assert r.elapsed < 20.0, "start outlived its 20 s timeout"
        assert "quorum" in r.reason or "monitor" in r.reason, r.reason
        assert other.running_on() == []
        r = running.agent(1, "stop", timeout_ms=20000)
        assert r.rc == OCF_SUCCESS, r
        assert r.elapsed < 10.0, "stop must not wait for Ceph"
        assert running.running_on() == []
    finally:
        lab.start_mon(2)
        lab.start_mon(3)
        lab.wait_quorum(3, timeout=90)


def test_libvirtd_down_monitor_answers_from_qemu_never_not_running(lab, make_vm):
    vm = make_vm(disks=1)
    assert vm.agent(1, "start").rc == OCF_SUCCESS
    libvirtd_stop(lab, 1)
    try:
        # issue 13: a libvirtd restart must not restart the guest
        r = vm.agent(1, "monitor", interval_ms=10000, timeout_ms=20000)
        assert r.rc == OCF_SUCCESS, r                                    # QEMU still runs
        assert "libvirt unreachable" in r.stderr and "QEMU of domain" in r.stderr
        r = vm.agent(1, "monitor", interval_ms=0, timeout_ms=20000)     # probe
        assert r.rc == OCF_SUCCESS, r                                    # QEMU still runs
        assert "QEMU of domain" in r.stderr
    finally:
        libvirtd_start(lab, 1)
    assert vm.agent(1, "monitor", interval_ms=10000).rc == OCF_SUCCESS
    assert vm.agent(1, "stop").rc == OCF_SUCCESS


def test_stop_with_libvirtd_down_kills_qemu_itself(lab, make_vm):
    vm = make_vm(disks=1)
    assert vm.agent(1, "start").rc == OCF_SUCCESS
    pid = qemu_pid(lab, 1, vm.name)
    libvirtd_stop(lab, 1)
    try:
        r = vm.agent(1, "stop", timeout_ms=30000)
        assert r.rc == OCF_SUCCESS, r
        assert not os.path.exists("/proc/%d" % pid) or \
            open("/proc/%d/stat" % pid).read().split(")")[1].split()[0] == "Z"
        r = vm.agent(1, "monitor", interval_ms=0)
        assert r.rc == OCF_NOT_RUNNING, r
    finally:
        libvirtd_start(lab, 1)


def test_probe_and_stop_with_config_file_missing(lab, make_vm):
    vm = make_vm(disks=1)
    assert vm.agent(1, "start").rc == OCF_SUCCESS
    hidden = str(vm.config) + ".hidden"
    os.rename(vm.config, hidden)
    try:
        r = vm.agent(1, "monitor", interval_ms=0)
        assert r.rc == OCF_SUCCESS, r              # remembered: still running, not a guess
        r = vm.agent(1, "stop")
        assert r.rc == OCF_SUCCESS, r
        assert vm.running_on() == []
        r = vm.agent(1, "monitor", interval_ms=0)
        assert r.rc == OCF_NOT_RUNNING, r          # probe: nothing known, nothing runs
        r = vm.agent(1, "monitor", interval_ms=10000)
        assert r.rc == OCF_ERR_INSTALLED, r         # recurring: the real error
        assert "does not exist" in r.reason
        r = vm.agent(1, "start")
        assert r.rc == OCF_ERR_INSTALLED, r
    finally:
        os.rename(hidden, vm.config)


def test_live_migration_moves_the_writer(lab, make_vm):
    vm = make_vm(disks=2)
    a = vm.agent
    assert a(1, "start").rc == OCF_SUCCESS
    lab.guest_write(1, vm.name, 0)
    assert vm.writer_ips(0) == [lab.node_ip(1)]
    t0 = time.monotonic()
    r = a(1, "migrate_to", meta={"migrate_source": lab.node_name(1),
                                 "migrate_target": lab.node_name(2)}, timeout_ms=120000)
    assert r.rc == OCF_SUCCESS, r
    r2 = a(2, "migrate_from", meta={"migrate_source": lab.node_name(1),
                                    "migrate_target": lab.node_name(2)})
    assert r2.rc == OCF_SUCCESS, r2
    r3 = a(1, "stop")
    assert r3.rc == OCF_SUCCESS, r3
    print("\nmigrate_to %.2f s, migrate_from %.2f s, source stop %.2f s (total %.2f s); %s"
          % (r.elapsed, r2.elapsed, r3.elapsed, time.monotonic() - t0,
             [l for l in r2.stderr.splitlines() if "downtime" in l][-1:]))
    assert vm.running_on() == [2]
    lab.guest_write(2, vm.name, 0)
    for k in range(2):
        assert vm.writer_ips(k) == [lab.node_ip(2)], "the writer moved to node 2"
    assert a(2, "monitor", interval_ms=10000, depth=20).rc == OCF_SUCCESS
    assert a(2, "stop").rc == OCF_SUCCESS


def test_migrate_to_refuses_while_a_second_writer_exists(lab, make_vm):
    vm = make_vm(disks=1)
    assert vm.agent(1, "start").rc == OCF_SUCCESS
    lab.run(3, ["virsh", "-c", "qemu:///system", "create", str(vm.config)], timeout=60)
    r = vm.agent(1, "migrate_to", meta={"migrate_target": lab.node_name(2)})
    assert r.rc == OCF_ERR_GENERIC, r
    assert lab.node_name(3) in r.reason and vm.spec(0) in r.reason
    assert sorted(vm.running_on()) == [1, 3]       # nothing moved
    r = vm.agent(1, "monitor", interval_ms=10000, depth=20)
    assert r.rc == OCF_ERR_GENERIC and "SPLIT BRAIN" in r.reason, r


def test_ocf_tester_passes_with_a_real_rbd_domain(lab, make_vm):
    vm = make_vm(disks=2)
    argv = ["ocf-tester", "-n", vm.name]
    for k, v in vm.agent.params.items():
        argv += ["-o", "%s=%s" % (k, v)]
    argv.append(vm.agent.path)
    p = lab.run(1, argv, check=False, timeout=600)
    print(p.stdout[-2000:], p.stderr[-2000:])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "passed all tests" in p.stdout
    assert vm.running_on() == []
