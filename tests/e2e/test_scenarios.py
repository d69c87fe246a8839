"""The story of the lab, end to end, with real Pacemaker, Ceph, libvirt and QEMU on three
hyperconverged nodes configured from cib-examples/pcs.sh. The tests run in this order and
each starts from where the previous one left the cluster (the conftest's session lab).

Throughout, the invariant checker samples every guarded image (never two writers, no VM
lost); each test also asserts on what it measured.
"""

import pytest

from vmlab import cluster_config
from vmlab.util import wait_until

pytestmark = pytest.mark.e2e

STATE = {}                    # what one test leaves for the next
PARTITION_LIMIT_S = 60.0      # bounded by Ceph's OSD heartbeat grace (20 s), see docs/lab.md
FIRST_WRITE_LIMIT_S = 1.0     # without the agent's recovery: ~28 s (docs/ceph-facts.md)


def baseline(cluster):
    """Every node up and online, every VM running once, Ceph green everywhere."""
    lab = cluster.lab
    for i in lab.indexes:
        assert lab.alive(i), f"{lab.node_name(i)} is down at the start of the test"
    lab.wait_pacemaker_online(lab.nodes, timeout=120)
    cluster_config.wait_settled(lab, cluster.cfg, timeout=180)


def node_running(story, vm):
    return story.index(story.where()[vm][0])


def test_vms_run_each_on_one_node_and_vmceph_check_names_the_writers(
        cluster, story, invariants, figure):
    baseline(cluster)
    r = story.vms_running()
    lab = cluster.lab
    print(r)
    assert sorted(r["placement"]) == sorted(cluster.cfg.vms)
    # each image has exactly one writer: the QEMU on the node Pacemaker runs its VM on
    images = {img: vm for vm, imgs in cluster.cfg.vms.items() for img in imgs}
    seen = {}
    for image, node, client, addr in r["writers"]:
        seen.setdefault(image, []).append((node, client, addr))
    for image, vm in images.items():
        writers = seen.get(f"{lab.pool}/{image}", [])
        assert len(writers) == 1, (image, writers)
        node, client, addr = writers[0]
        assert node == r["placement"][vm], (image, writers, r["placement"])
        assert addr.startswith(lab.node_ip(story.index(node)) + ":") and client.startswith(
            "client."), writers
    for vm, decision in r["decisions"].items():
        # asked on one node: its own VM is already running, the others' are refused
        expected = "already-running" if r["placement"][vm] == r["checked_on"] else "refuse"
        assert decision == expected, (vm, decision, r["checked_on"])
    figure("first guest write after start (s)", {vm: round(t, 3)
                                                 for vm, t in r["first_write_s"].items()})


def test_crm_resource_move_is_a_live_migration(cluster, story, invariants, figure):
    baseline(cluster)
    vm = "vm1"
    source = story.where()[vm][0]
    # the target: the next node, which then runs two VMs (the crash test takes both down)
    names = [cluster.lab.node_name(i) for i in cluster.lab.indexes]
    target = names[(names.index(source) + 1) % len(names)]
    r = story.live_migrate(vm, target)
    print(r)
    assert r["migrate_to_logged"], "migrate_to did not run on the source"
    assert r["downtime_ms"] is not None, "no 'migration of ... downtime' line on the target"
    assert not r["cold_start_on_target"], "the VM was started, not migrated, on the target"
    assert r["qemu_always_present"], "the VM had no QEMU anywhere during the move"
    assert story.where()[vm] == [target]
    assert r["violations"] == []
    figure("live migration (crm resource move -> done, s)", round(r["took_s"], 2))
    figure("live migration job / downtime (ms)", (r["job_ms"], r["downtime_ms"]))


def test_migrate_to_refuses_a_red_target(cluster, story, invariants, figure):
    baseline(cluster)
    lab = cluster.lab
    where = story.where()
    load = {lab.node_name(i): sum(lab.node_name(i) in n for n in where.values())
            for i in lab.indexes}
    target = min(load, key=load.get)
    vm = next(v for v, nodes in where.items() if nodes[0] != target)
    r = story.migrate_to_red_target(vm, story.index(target))
    print(r)
    assert r["rc"] == 1, r
    assert "red" in r["reason"] and target in r["reason"], r["reason"]
    assert r["state_on_source"] == "running" and r["state_on_target"] == "absent", r
    assert r["where"] == [r["source"]]


def test_start_is_refused_while_the_writer_is_a_live_member(cluster, story, invariants, figure):
    baseline(cluster)
    lab = cluster.lab
    vm = "vm3"
    home = story.where()[vm][0]
    writer = next(i for i in lab.indexes if lab.node_name(i) != home)
    r = story.refused_start(vm, writer)
    print(r)
    watcher = r["clients"]["watchers"][0]
    image = f"{lab.pool}/{cluster.cfg.vms[vm][0]}"
    others = {lab.node_name(i) for i in lab.indexes if i != writer}
    assert set(r["reasons"]) == others, r["reasons"]
    for node, reason in r["reasons"].items():
        # the exit reason Pacemaker recorded (crm_mon; the CIB keeps 128 characters)
        for part in (image, lab.node_name(writer), f"client.{watcher['id']}", watcher["addr"]):
            assert part in reason, (node, part, reason)
    assert r["qemu_nodes"] == [lab.node_name(writer)], "a second QEMU was started"
    assert [n for n, s in r["domstate"].items() if s != "absent"] == [lab.node_name(writer)]
    assert r["violations"] == []
    figure("start refused (exit reason)", next(iter(r["reasons"].values())))


def test_node_crash_is_fenced_and_its_vms_recovered_at_once(cluster, story, invariants, figure):
    baseline(cluster)
    victim = node_running(story, "vm1")
    r = story.crash(victim)
    print(r)
    assert r["vms"], "the victim ran no VM"
    assert r["fenced_s"] is not None and r["gone_s"] is not None, r
    # real Pacemaker facts: after fencing the node is offline and clean, and its fence is in
    # the fencing history with no activity since (GONE): the agent recovers its clients, on
    # that proof, instead of refusing them
    for vm in r["vms"]:
        node, _ = r["running"][vm]
        assert node != r["victim"]
    assert any(r["victim"] in line and "node fenced" in line
               for line in r["blocklisted"]), r["blocklisted"]
    assert r["locks_broken"], "no 'broke the exclusive lock' line: the VM's lock was not taken over"
    for vm, t in r["first_write_s"].items():
        assert t < FIRST_WRITE_LIMIT_S, f"{vm}'s first write took {t:.2f} s (stalled)"
    assert r["violations"] == []
    figure("node crash: fenced after (s)", round(r["fenced_s"], 1))
    figure("node crash: failover, crash -> VM running on a survivor (s)",
           {vm: round(t, 1) for vm, (_, t) in r["running"].items()})
    figure("node crash: first write on the survivor (s)",
           {vm: round(t, 3) for vm, t in r["first_write_s"].items()})
    # "At once" is asserted as behaviour, not as a time (how long is the benchmark's
    # business, docs/benchmarks.md): no start waited out a watch ("looking again": a
    # holder not proven dead). Retrying a blocklist or a lock break, or an inspection,
    # while Ceph itself cannot answer (the crashed node's monitor and OSD, until a new
    # quorum marks it down) is Ceph's time, not the agent's. A 15 s bound here failed CI
    # once at 16.0 s, when the sampler's longest gap was 14.1 s, "Ceph did not answer".
    waited = [line for line in r["retries"] if "looking again" in line]
    assert waited == [], waited
    STATE["crashed"] = victim


def test_crashed_node_rejoins(cluster, story, invariants, figure):
    victim = STATE.get("crashed") or next(
        i for i in cluster.lab.indexes if not cluster.lab.alive(i))
    r = story.rejoin(victim)
    print(r)
    figure("rejoin after crash: boot -> HEALTH_OK / online / green (s)",
           (round(r["health_ok_s"], 1), round(r["online_s"], 1), round(r["green_s"], 1)))
    baseline(cluster)


def test_partitioned_node_is_fenced_and_its_vms_recovered(cluster, story, invariants, figure):
    baseline(cluster)
    lab = cluster.lab
    where = story.where()
    load = {i: sum(lab.node_name(i) in n for n in where.values()) for i in lab.indexes}
    victim = max(load, key=lambda i: (load[i], i))
    r = story.partition(victim)
    print(r)
    assert r["powered_off"], "the partitioned node was not fenced (powered off)"
    assert r["fenced_s"] is not None, r
    for vm in r["vms"]:
        assert r["running"][vm][0] != r["victim"]
    for vm, t in r["first_write_s"].items():
        assert t < FIRST_WRITE_LIMIT_S, f"{vm}'s first write took {t:.2f} s (stalled)"
    assert r["violations"] == []
    figure("partition: fenced after (s)", round(r["fenced_s"], 1))
    figure("partition: cut off -> VM running on the majority (s)",
           {vm: round(t, 1) for vm, (_, t) in r["running"].items()})
    assert r["failover_s"] is None or r["failover_s"] <= PARTITION_LIMIT_S
    STATE["partitioned"] = victim


def test_partitioned_node_rejoins(cluster, story, invariants, figure):
    victim = STATE.get("partitioned") or next(
        i for i in cluster.lab.indexes if not cluster.lab.alive(i))
    r = story.rejoin(victim, heal=True)
    print(r)
    figure("rejoin after partition: boot -> HEALTH_OK / online / green (s)",
           (round(r["health_ok_s"], 1), round(r["online_s"], 1), round(r["green_s"], 1)))
    baseline(cluster)


def test_never_two_writers_and_no_vm_lost_all_along(cluster):
    checker = cluster.checker
    checker.wait_samples(3)
    report = checker.report()
    print(report)
    assert report["samples"] > 100, report
    checker.assert_clean()
    wait_until(lambda: all(checker.qemu_nodes(vm) for vm in cluster.cfg.vms), timeout=30,
               what="every VM running")
