"""The write oracle (vmlab/writeoracle.py) on the real three-node cluster: every VM writes
stamped blocks through its QEMU all along a live migration and a node crash with its
recovery, and the images read back show no second writer and no acknowledged write lost.
Then the oracle is shown to fire: one domain started by hand on two nodes (plain virsh
create of the same XML, no agent, no lock) writing through both QEMUs must be reported by
the oracle, and by the invariant checker (vmlab/invariants.py) too.

Runs on the session's cluster (conftest.py) after the scenarios; leaves it as it found it
(every node up, every VM running once).
"""

import time

import pytest

from vmlab import cluster_config
from vmlab.invariants import InvariantChecker
from vmlab.util import wait_until
from vmlab.writeoracle import WriteOracle

pytestmark = pytest.mark.e2e


def baseline(cluster):
    lab = cluster.lab
    for i in lab.indexes:
        assert lab.alive(i), f"{lab.node_name(i)} is down at the start of the test"
    lab.wait_pacemaker_online(lab.nodes, timeout=120)
    cluster_config.wait_settled(lab, cluster.cfg, timeout=180)


def assert_clean(result):
    print(result)
    assert result.read_errors == {}, result.read_errors
    assert result.violations == [], "\n".join(map(repr, result.violations))
    assert result.lost_acked == [], "\n".join(map(repr, result.lost_acked))


def acked_elsewhere(oracle, vm, node, since):
    return any(r["node"] != node for r in oracle.acked_since(vm, since))


@pytest.fixture(scope="module")
def oracle(cluster):
    vms = [{"name": vm, "image": images[0]} for vm, images in cluster.cfg.vms.items()]
    o = WriteOracle(cluster.lab, vms, period_s=0.5, log=print)
    yield o
    o.stop()


def test_no_second_writer_nor_lost_write_through_a_migration_and_a_crash(
        cluster, story, invariants, oracle, figure):
    baseline(cluster)
    lab = cluster.lab
    oracle.start()
    for vm in cluster.cfg.vms:
        oracle.wait_acked(vm, 3, timeout=60)

    vm = sorted(cluster.cfg.vms)[0]
    source = story.where()[vm][0]
    names = [lab.node_name(i) for i in lab.indexes]
    target = names[(names.index(source) + 1) % len(names)]
    t_move = time.monotonic()
    r = story.live_migrate(vm, target)
    assert story.where()[vm] == [target] and not r["cold_start_on_target"], r
    oracle.wait_acked(vm, 1, timeout=60, since=t_move + r["took_s"])
    after_move = oracle.check()
    assert_clean(after_move)
    gens = {row["node"] for row in oracle.timeline() if row["vm"] == vm and
            row["status"] == "acked"}
    assert {source, target} <= gens, f"{vm}'s writes went through {gens}"
    figure("write oracle: longest gap around a live migration (s)",
           round(after_move.longest_gap_s[vm], 2))

    victim = story.index(target)
    story.settle()
    t_fault = time.monotonic()
    crash = story.crash(victim)
    assert crash["violations"] == [], crash["violations"]
    for v in crash["vms"]:
        wait_until(lambda: acked_elsewhere(oracle, v, target, t_fault), timeout=120,
                   interval=0.2, what=f"{v} writing on a survivor")
    t_rejoin = time.monotonic()
    story.rejoin(victim)       # Pacemaker may move VMs back to it: live migrations
    result = oracle.check()
    oracle.stop()
    assert_clean(result)
    # each VM of the crashed node: from its last write acknowledged there to its first
    # acknowledged on a survivor (a new owner generation), before the victim came back
    outage = {}
    for v in crash["vms"]:
        rows = [r for r in oracle.timeline() if r["vm"] == v and r["status"] == "acked"
                and r["mono"] < t_rejoin]
        last_there = max(r["mono"] for r in rows if r["node"] == target)
        later = [r for r in rows if r["mono"] > last_there]
        assert later and all(r["node"] != target for r in later), later[:3]
        assert min(r["gen"] for r in later) > max(r["gen"] for r in rows
                                                  if r["node"] == target)
        outage[v] = round(later[0]["mono"] - last_there, 2)
    figure("write oracle: last write on the crashed node to first on a survivor (s)",
           outage)
    figure("write oracle: writes acknowledged / failed / timed out",
           (result.writes, result.failed, result.timeouts))
    figure("write oracle: longest gap per VM (s)",
           {v: round(s, 2) for v, s in result.longest_gap_s.items()})


def test_the_oracle_and_the_checker_fire_on_one_domain_running_on_two_nodes(cluster, figure):
    """The agent bypassed: a domain (not a cluster resource) is started by hand on one node,
    then the same XML on another; the oracle's writer writes through both QEMUs."""
    lab = cluster.lab
    name, image = "oracle-twin", "oracle-twin-disk0"
    first, second = [i for i in lab.indexes if lab.alive(i)][:2]
    lab.rbd_create(image)
    path = lab.path(f"{name}.xml")
    with open(path, "w") as f:
        f.write(lab.make_domain_xml(name, [image]))
    checker = oracle = None
    try:
        checker = InvariantChecker(lab, {name: [image]}, log=print).start()
        oracle = WriteOracle(lab, [{"name": name, "image": image}], period_s=0.3,
                             log=print).start()
        lab.virsh(first, "create", path)
        oracle.wait_acked(name, 3, timeout=60)
        assert checker.since(0) == [], "one QEMU is no violation"
        lab.virsh(second, "create", path)
        t_twin = time.monotonic()
        end = t_twin + 60
        both = set()
        while len(both) < 2 and time.monotonic() < end:
            both = {r["node"] for r in oracle.acked_since(name, t_twin)}
            time.sleep(0.2)
        assert len(both) == 2, f"writes acknowledged after the twin started: {both}"
        oracle.wait_acked(name, 4, timeout=30, since=t_twin)
        result = oracle.check()
        print(result)
        kinds = {v.kind for v in result.violations}
        assert {"late-write", "two-owners-acked"} <= kinds, result.summary()
        checker.wait_samples(3, timeout=30)
        seen = {v.kind for v in checker.since(0)}
        assert "two-writers" in seen or "both-running" in seen, checker.since(0)
        figure("write oracle canary (two QEMUs by hand): violations by kind",
               {k: sum(1 for v in result.violations if v.kind == k) for k in sorted(kinds)})
        figure("invariant checker canary: violations by kind",
               {k: sum(1 for v in checker.since(0) if v.kind == k) for k in sorted(seen)})
    finally:
        if oracle is not None:
            oracle.stop()
        for i in (first, second):
            lab.run(i, ["virsh", "-c", "qemu:///system", "destroy", name], check=False)
        if checker is not None:
            checker.stop()
        lab.rbd_remove(image)
