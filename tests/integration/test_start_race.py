"""Issue 9 against the real lab: a start that verifies itself, a stop no side task can fail,
a config file libvirt cannot take away, no stale memory over a newer disk.

Two libvirt hosts (nodes 1 and 2) and one Ceph. "Running" below is what `virsh list
--state-running` says (a paused domain has its images open, but no vCPU has run: that is
the point of the paused start); "writers" are the image's watchers.
"""

import os
import random
import re
import threading
import time

import pytest

pytestmark = pytest.mark.lab

OCF_SUCCESS, OCF_ERR_GENERIC = 0, 1
ROUNDS = int(os.environ.get("VMCEPH_RACE_ROUNDS", "20"))


def running_on(lab, name, nodes=(1, 2)):
    out = []
    for i in nodes:
        names = lab.virsh(i, "list", "--state-running", "--name").split()
        if name in names:
            out.append(i)
    return out


def names(lab, i, reason):
    """Does ``reason`` name node ``i`` (by name, as a word)?"""
    return re.search(r"\b%s\b" % re.escape(lab.node_name(i)), reason) is not None


class Sampler:
    """While a race runs: every ~0.2 s, where the domain runs and who watches its first
    image. Records every sample in which two nodes run it."""

    def __init__(self, lab, vm):
        self.lab, self.vm = lab, vm
        self.samples, self.both = [], []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                run = running_on(self.lab, self.vm.name)
                ips = self.vm.writer_ips(0)
            except Exception as e:      # a sample lost is not a verdict
                self.samples.append(("error", str(e)))
                continue
            self.samples.append((run, ips))
            if len(run) > 1:
                self.both.append((time.monotonic(), run, ips))
            self._stop.wait(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(30)


def wait_no_writer(vm, timeout=60):
    end = time.monotonic() + timeout
    while vm.writer_ips(0):
        assert time.monotonic() < end, "watchers of %s still there: %s" % (vm.spec(0),
                                                                          vm.clients(0))
        time.sleep(0.3)


def settle(lab, vm):
    for i in (1, 2):
        r = vm.agent(i, "stop", timeout_ms=60000)
        assert r.rc == OCF_SUCCESS, r
    assert running_on(lab, vm.name) == []
    wait_no_writer(vm)


def check_outcome(lab, vm, results, who):
    """After a race: at most one node runs the domain, its QEMU is the only writer, and
    every loser's reason names the winner. Returns the winner (node index) or None."""
    run = running_on(lab, vm.name)
    assert len(run) <= 1, "BOTH RUNNING: %s" % run
    ok = [i for i, r in results.items() if r.rc == OCF_SUCCESS]
    if run:
        (winner,) = run
        # the writers settle to the winner's QEMU alone (a loser's paused QEMU is destroyed)
        end = time.monotonic() + 30
        while vm.writer_ips(0) != [lab.node_ip(winner)]:
            assert time.monotonic() < end, vm.clients(0)
            time.sleep(0.3)
        lab.guest_write(winner, vm.name, 0)        # the winner writes, and alone
        assert vm.writer_ips(0) == [lab.node_ip(winner)]
        for i, r in results.items():
            if i != winner and who.get(i) == "agent":
                assert r.rc == OCF_ERR_GENERIC, r
                assert names(lab, winner, r.reason), (winner, r.reason)
        return winner
    assert ok == [] or all(who.get(i) != "agent" for i in ok), results
    return None


def test_two_agent_starts_at_the_same_moment(lab, make_vm):
    """20 rounds: two starts of one domain launched together on nodes 1 and 2."""
    vm = make_vm(disks=1)
    tally = {"node1": 0, "node2": 0, "both backed off": 0}
    checks = {"refused before create": 0, "backed off after create": 0}
    with Sampler(lab, vm) as sampler:
        for rnd in range(ROUNDS):
            barrier = threading.Barrier(2)
            results = {}

            def go(i):
                barrier.wait()
                results[i] = vm.agent(i, "start", timeout_ms=60000)
            threads = [threading.Thread(target=go, args=(i,)) for i in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            winner = check_outcome(lab, vm, results, {1: "agent", 2: "agent"})
            tally["node%d" % winner if winner else "both backed off"] += 1
            for r in results.values():
                if r.rc != OCF_SUCCESS:
                    after = ("destroyed before any of its vCPUs" in r.reason or
                             "after backing off" in r.reason)
                    checks["backed off after create" if after else "refused before create"] += 1
            print("round %2d: %s; %s" % (rnd + 1, "winner node%d" % winner if winner else
                                          "both backed off", "; ".join(
                "node%d rc %d %.1fs %s" % (i, r.rc, r.elapsed, r.reason[:150])
                for i, r in sorted(results.items()))))
            settle(lab, vm)
    print("\noutcomes over %d rounds: %s; losers: %s; %d samples, both running in %d"
          % (ROUNDS, tally, checks, len(sampler.samples), len(sampler.both)))
    assert sampler.both == [], sampler.both
    assert sum(tally.values()) == ROUNDS


def test_virsh_create_on_node2_racing_an_agent_start_on_node1(lab, make_vm):
    """A `virsh create` outside the cluster is no vmceph start: it checks nothing and
    runs at once. The agent must never resume while that QEMU has the image open when it
    looks again; if the plain QEMU only comes after the agent's check, nothing can stop
    it, and the deep monitor reports the split brain."""
    vm = make_vm(disks=1)
    rng = random.Random(9)
    tally = {"agent refused": 0, "virsh after the agent's check (split brain reported)": 0,
             "agent alone": 0}
    for rnd in range(10):
        delay = rng.uniform(0.0, 0.8)
        results, virsh = {}, {}

        def agent():
            results[1] = vm.agent(1, "start", timeout_ms=60000)

        def plain():
            time.sleep(delay)
            virsh["p"] = lab.run(2, ["virsh", "-c", "qemu:///system", "create",
                                     str(vm.config)], check=False, timeout=60)
        threads = [threading.Thread(target=agent), threading.Thread(target=plain)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        r = results[1]
        run = running_on(lab, vm.name)
        if r.rc != OCF_SUCCESS:
            assert 1 not in run, "the agent failed but its domain runs"
            assert names(lab, 2, r.reason), r.reason
            tally["agent refused"] += 1
        elif 2 in run:
            # both run: the plain QEMU came after the agent's second look
            deep = vm.agent(1, "monitor", interval_ms=10000, depth=20)
            assert deep.rc == OCF_ERR_GENERIC and "SPLIT BRAIN" in deep.reason.upper(), deep
            tally["virsh after the agent's check (split brain reported)"] += 1
        else:
            assert virsh["p"].returncode != 0 or 2 not in run
            tally["agent alone"] += 1
        print("round %2d (virsh %.2f s later): agent rc %d %s | virsh rc %d | running on %s"
              % (rnd + 1, delay, r.rc, r.reason[:140], virsh["p"].returncode, run))
        lab.run(2, ["virsh", "-c", "qemu:///system", "destroy", vm.name], check=False)
        settle(lab, vm)
    print("\noutcomes: %s" % tally)
    assert tally["agent refused"] > 0


def test_config_in_libvirts_own_directory_survives_start(lab, make_vm):
    vm = make_vm(disks=1)
    lab.run(1, ["virsh", "-c", "qemu:///system", "define", str(vm.config)])
    own = "/etc/libvirt/qemu/%s.xml" % vm.name
    before = lab.run(1, ["cat", own]).stdout
    assert vm.name in before
    r = vm.agent(1, "start", extra={"config": own})
    try:
        assert r.rc == OCF_SUCCESS, r
        assert running_on(lab, vm.name) == [1]
        after = lab.run(1, ["cat", own], check=False)
        assert after.returncode == 0 and after.stdout == before, "config file changed or gone"
        assert "written back unchanged" in r.stderr
    finally:
        vm.agent(1, "stop", extra={"config": own})
        lab.run(1, ["rm", "-f", own], check=False)


def test_save_config_to_a_missing_directory_and_a_failing_snapshot(lab, make_vm, shared_dir):
    # save_config_on_stop: the config's directory is gone at stop (unmounted shared storage)
    vm = make_vm(disks=1)
    cfgdir = shared_dir / ("cfg-" + vm.name)
    cfgdir.mkdir()
    config = cfgdir / "vm.xml"
    config.write_text(vm.config.read_text())
    assert vm.agent(1, "start", extra={"config": str(config)}).rc == OCF_SUCCESS
    os.rename(cfgdir, str(cfgdir) + ".away")
    try:
        r = vm.agent(1, "stop", extra={"config": str(config), "save_config_on_stop": "true"})
        assert r.rc == OCF_SUCCESS, r
        assert "cannot save the configuration" in r.stderr, r
        assert running_on(lab, vm.name) == [] and vm.agent(1, "monitor").rc == 7
    finally:
        os.rename(str(cfgdir) + ".away", cfgdir)

    # snapshot into a read-only file system: libvirt's save fails (EROFS, root or not; a
    # small full tmpfs did not do: the lab guest's memory is zero pages, and QEMU's state
    # of a 64 MiB guest took less than 1 MiB), stop goes on
    full = "/var/lib/libvirt/ro-" + vm.name
    lab.run(1, ["mkdir", "-p", full])
    lab.run(1, ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", full])
    try:
        extra = {"snapshot": full, "force_stop": "false", "shutdown_mode": "acpi"}
        assert vm.agent(1, "start", extra=extra).rc == OCF_SUCCESS
        # force_stop (allowed at stop): after the failed save, destroy at once (the lab's
        # guests have no OS to shut down)
        r = vm.agent(1, "stop", extra=dict(extra, force_stop="true"), timeout_ms=30000)
        print(r.stderr[-1500:])
        assert r.rc == OCF_SUCCESS, r
        assert "cannot save the memory" in r.stderr, r
        assert running_on(lab, vm.name) == [] and not lab.virsh(1, "list", "--name").split() \
            .count(vm.name)
        assert lab.run(1, ["ls", "-A", full]).stdout.strip() == "", "partial state left"
    finally:
        lab.run(1, ["umount", full], check=False)


def read_first_bytes(lab, vm, n=16):
    p = lab.run(1, ["sh", "-c", "rbd export --no-progress %s - | head -c %d | od -An -tx1"
                    % (vm.spec(0), n)])
    return p.stdout.split()


def test_stale_snapshot_is_discarded_after_the_guest_ran_elsewhere(lab, make_vm):
    vm = make_vm(disks=1)
    snap = "/var/lib/libvirt/vmceph-snap"          # per node: each node its own
    extra = {"snapshot": snap, "force_stop": "false"}
    a = vm.agent
    # control: save on node 1, start on node 1 again: restored (the generation is current)
    assert a(1, "start", extra=extra).rc == OCF_SUCCESS
    r = a(1, "stop", extra=extra)
    assert r.rc == OCF_SUCCESS and "saved to" in r.stderr, r
    gen = lab.run(1, ["rbd", "image-meta", "get", vm.spec(0), "vmceph.generation"]).stdout
    assert lab.run(1, ["cat", snap + "/%s.state.gen" % vm.name]).stdout.strip() == gen.strip()
    r = a(1, "start", extra=extra)
    assert r.rc == OCF_SUCCESS and "restored from" in r.stderr, r
    # now: snapshot stop on node 1, cold start and a write on node 2, stop there
    assert a(1, "stop", extra=extra).rc == OCF_SUCCESS
    assert lab.run(1, ["test", "-s", snap + "/%s.state" % vm.name], check=False).returncode == 0
    r = a(2, "start", extra=extra)
    assert r.rc == OCF_SUCCESS and "restored from" not in r.stderr, r
    lab.guest_write(2, vm.name, 0, pattern=0x5a)
    assert a(2, "stop", extra={"force_stop": "true"}).rc == OCF_SUCCESS
    assert read_first_bytes(lab, vm)[:4] == ["5a"] * 4
    # back on node 1: the state saved there is older than the disk: discarded, booted cold
    r = a(1, "start", extra=extra)
    print(r.stderr[-2000:])
    assert r.rc == OCF_SUCCESS, r
    assert "discarding the saved memory state" in r.stderr and "has run since" in r.stderr
    assert "restored from" not in r.stderr
    assert lab.run(1, ["test", "-e", snap + "/%s.state" % vm.name], check=False).returncode != 0
    assert read_first_bytes(lab, vm)[:4] == ["5a"] * 4      # node 2's data, untouched
    assert a(1, "stop", extra={"force_stop": "true"}).rc == OCF_SUCCESS


def test_migration_with_a_frozen_target_ends_within_its_timeout(lab, make_vm):
    """The target's libvirtd stops answering (SIGSTOP) during migrate_to: every libvirt
    call of the source is bounded, the job is aborted with time left in the action, and
    the reason says where the guest is, as the source sees it."""
    import signal
    vm = make_vm(disks=1)
    assert vm.agent(1, "start").rc == OCF_SUCCESS
    pid = lab.daemon_pid(2, "libvirtd")
    os.kill(pid, signal.SIGSTOP)
    try:
        r = vm.agent(1, "migrate_to", meta={"migrate_source": lab.node_name(1),
                                           "migrate_target": lab.node_name(2)},
                     timeout_ms=20000)
    finally:
        os.kill(pid, signal.SIGCONT)
    print("\nmigrate_to with a frozen target: rc %d after %.1f s: %s\n%s"
          % (r.rc, r.elapsed, r.reason, r.stderr[-1500:]))
    assert r.rc == OCF_ERR_GENERIC, r
    assert r.elapsed < 20.0, "migrate_to outlived its 20 s timeout"
    assert "did not finish within the 20 s timeout" in r.reason
    assert "still runs on this node" in r.reason or "check both nodes" in r.reason
    # whatever libvirt makes of it once the target answers again: one node runs the guest
    end = time.monotonic() + 60
    while running_on(lab, vm.name) != [1]:
        assert time.monotonic() < end, running_on(lab, vm.name)
        time.sleep(1)
    assert vm.agent(1, "stop").rc == OCF_SUCCESS
    lab.run(2, ["virsh", "-c", "qemu:///system", "destroy", vm.name], check=False)
