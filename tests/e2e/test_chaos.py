"""The short fault soak and the canary (issue 11), on the session's three-node cluster.

The soak (vmlab/chaos.py) plays a seeded schedule of faults with every VM written all the
time; after each fault it heals, waits for the cluster to settle, and asks both oracles:
the watcher checker (the session's, vmlab/invariants.py) and the write oracle
(vmlab/writeoracle.py, which reads the images back). The canary then switches the VMs to
ocf:heartbeat:VirtualDomain and plays the fault it cannot survive: both oracles must fire.
The canary changes the VMs' agent, so this module runs last (conftest MODULE_LAST).

Budget: about 8 minutes of `make test`, so the short soak plays only kinds the e2e
scenarios do not already play (crash and full partition run in test_scenarios.py) and
that take under a minute and a half each; `make chaos` plays every kind (also the move
storm, the interrupted migrations, the storage partition, OSD and quorum losses) and
docs/reliability.md holds a longer soak's figures.
"""

import os

import pytest

from vmlab import chaos

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("VMCEPH_CHAOS_SEED", "11"))
SHORT = ["corosync-partition", "libvirtd-restart", "mon-stop", "agent-kill-migrate"]
# Found by the soak (docs/reliability.md): a QEMU that died holding its image's exclusive
# lock left a lingering watch, then a lock holder with no watch, and every start refused
# it until an administrator removed the lock. Fixed in the agent (vmceph.deadclients):
# the restart in place recovers the dead QEMU's own client instances.
KNOWN_BUG = ["qemu-kill"]


def _says(result):
    for r in result["records"]:
        print(r["kind"], {k: v for k, v in r.items() if k not in ("t_abs", "t_end_abs")})
    print("oracles:", result["oracles"])


def test_short_soak_every_fault_survived_by_both_oracles(cluster, figure):
    result = chaos.run_soak(cluster.lab, cluster.cfg, SEED, len(SHORT), SHORT,
                            checker=cluster.checker)
    _says(result)
    s = chaos.summarize(result["records"])
    figure("chaos short soak", {k: (v["count"], v["survived"], v["median_s"], v["worst_s"])
                                for k, v in s.items()})
    assert sorted(r["kind"] for r in result["records"]) == sorted(SHORT)
    for r in result["records"]:
        assert not r["not_once"], (r["kind"], r["not_once"])
        assert not any(r["violations"].values()), (r["kind"], r["violations"])
        assert "error" not in r, (r["kind"], r["error"])
        assert not r["operator"], (r["kind"], r["operator"])
    assert result["oracles"]["write oracle"]["lost_acked"] == 0
    assert not result["oracles"]["write oracle"]["read_errors"]


def test_a_killed_qemu_is_restarted_without_an_operator(cluster, figure):
    result = chaos.run_soak(cluster.lab, cluster.cfg, SEED, 1, KNOWN_BUG,
                            checker=cluster.checker)
    _says(result)
    r = result["records"][0]
    # the harness cleaned up as an operator would; the data never had two writers
    assert result["oracles"]["write oracle"]["lost_acked"] == 0
    assert not r["violations"]["write oracle"], r["violations"]
    figure("chaos qemu-kill", {"operator": r["operator"], "back_s": r["all_back_s"]})
    assert r["survived"], r


def test_a_killed_qemu_recovered_on_another_node_needs_no_operator(cluster, figure):
    """The same kill, with the VM banned from its node by the failure (migration-threshold
    1 for the fault): its start elsewhere is refused unless the stop on the dead QEMU's
    node released the QEMU's clients (CI run of stop 18, seed 11)."""
    result = chaos.run_soak(cluster.lab, cluster.cfg, SEED, 1, ["qemu-kill-move"],
                            checker=cluster.checker)
    _says(result)
    r = result["records"][0]
    assert result["oracles"]["write oracle"]["lost_acked"] == 0
    assert not any(r["violations"].values()), r["violations"]
    figure("chaos qemu-kill-move", {"operator": r["operator"], "back_s": r["all_back_s"],
                                    "moved_to": r["detail"].get("moved_to")})
    assert r["detail"]["moved_to"], ("the VM was not recovered on another node: the test "
                                     "proves nothing", r["detail"])
    assert not r["operator"], r["operator"]
    assert r["survived"], r


def test_a_killed_start_leaves_its_node_eligible(cluster, figure):
    """The agent SIGKILLed in the middle of start (as Pacemaker kills a start that outlives
    its timeout). With Pacemaker's default start-failure-is-fatal=true that start's node
    got an INFINITY fail count for failure-timeout (10 min): two such starts of one VM on
    two nodes of three, then the third node lost, and the VM ran nowhere (the 200-fault
    soak, docs/reliability.md, seed 1210 fault 120; seeds 1205 and 1208 before). The
    examples set start-failure-is-fatal=false: the failed start counts one failure
    toward migration-threshold (3), like a failed monitor, and the node stays eligible."""
    lab = cluster.lab
    for attempt in range(3):
        # no fail count left by the tests or tries before: every count read is this fault's
        lab.run(lab.first_alive(), ["crm_resource", "--cleanup"], timeout=120, check=False)
        # the fault kills the start 0, 0.3 or 1 s after it appears (drawn from the seed):
        # a start quicker than that ends before the kill, and proves nothing
        result = chaos.run_soak(lab, cluster.cfg, SEED + attempt, 1, ["agent-kill-start"],
                                checker=cluster.checker)
        _says(result)
        r = result["records"][0]
        assert not any(r["violations"].values()), r["violations"]
        assert not r["operator"], r["operator"]
        assert r["survived"], r
        vm = r["detail"]["vm"]
        failed = {n for rsc, op, n, _ in cluster.story.failures()
                  if rsc == vm and op == "start"} & set(r["detail"]["killed"])
        if failed:
            break
    else:
        pytest.fail("in 3 tries no start was killed before it ended: the test proves nothing")
    counts = {}
    for entry in r["fail_counts"]:              # "vm on node: count"
        key, _, count = entry.rpartition(": ")
        counts[key] = int(count)
    figure("chaos agent-kill-start (fail counts left)", counts)
    for node in failed:
        # the killed start counts 1 (2 with the failed monitor of the QEMU the fault killed
        # first, when that ran on the same node); start-failure-is-fatal=true makes it
        # 1000000 (INFINITY): banned from that node for failure-timeout
        assert counts.get(f"{vm} on {node}") in (1, 2), (
            f"{vm}'s killed start on {node}: expected 1 or 2 failures, below "
            f"migration-threshold 3", r["fail_counts"])
    lab.run(lab.first_alive(), ["crm_resource", "--cleanup", "-r", vm], timeout=60,
            check=False)


def test_canary_virtualdomain_split_brain_is_seen_by_both_oracles(cluster, figure):
    """The session checker would record the canary's violations as the session's: it is
    stopped first (its report is kept), the canary brings its own."""
    cluster.checker.stop()
    figure("invariant checker before the canary", cluster.checker.report())
    result = chaos.run_canary(cluster.lab, cluster.cfg, SEED)
    _says(result)
    r = result["records"][0]
    fired = {name: len(v) for name, v in r["violations"].items()}
    figure("canary (VirtualDomain) violations", fired)
    assert r["detail"]["running_twice"], ("the fault did not make VirtualDomain run a VM "
                                          "twice: the canary proves nothing", r["detail"])
    assert fired.get("watcher checker", 0) > 0, r["violations"]
    assert fired.get("write oracle", 0) > 0, r["violations"]
