"""Mass failover (issue 15, item 2): a node running ten VMs crashes; every one of them must
run exactly once on a survivor and write again, with the invariant checker (one writer
per image, every VM running once) sampling all along.

Its own lab: the session `cluster` (conftest.py) runs three VMs and its scenarios depend on
their placement. This one is the three-node lab configured from cib-examples/pcs.sh like
the session lab, with eleven one-disk VMs (vm4..vm11 are copies of the example's vm2,
cluster_config.add_vm_copies): vm1..vm10 placed on node3, vm11 alone on node2, by
INFINITY preferences that are removed again once they run (release_preferences), so that
nothing but the crash decides where they go.

First, the evacuation (issue 15, item 3, its own test): `pcs node standby node3`
live-migrates the ten VMs away (migration-limit=2 from cib-examples: two at a time), timed
against one single live migration; they are then put back on node3. The same again with
node3's #health-ceph set red (node-health-strategy=migrate-on-red; its own test), and
they are put back for the crash test.

Then one test, two crashes measured the same way, in the same run:
1. node2 (vm11 alone) is powered off: the single-VM failover; node2 rejoins;
2. node3 (vm1..vm10) is powered off: the mass failover.
Each is timed from the power-off to the moment the VM's guest write (lab.guest_write,
through its QEMU's librbd, acknowledged by Ceph) succeeds on a survivor; the figure for the
mass failover is the LAST of its ten VMs. Both crashed nodes are Ceph monitor peons (the
leader, node1's mon, survives both), so the two failovers pay the same monitor election.
The target of the issue (the last of ten writing within 1.5x the single VM's time) is a
figure, not an assertion (benchmarks measure, tests assert behaviour): the ratio is
printed, with what the agents' logs say each start spent its time on.

What the measurements showed (two shared cores, load ~3 per core): with Pacemaker's
default load-threshold (80%) every node reported "high" load, so the controller ran ONE
action at a time in the whole cluster and the ten starts went strictly one after the other,
~2.5-3.2 s apart: the last VM wrote again after 40.5 s against 11.1 s for one VM (3.6x;
another run 33.6 vs 16.4 s, 2.1x). load-threshold=400% alone: 22.3 vs 12.3 s (1.8x), the
last two starts waiting for the default node-action-limit (2 per core: 4). With
load-threshold=400% and node-action-limit=16, now in cib-examples, they start together:
17.7 vs 12.2 s (1.45x), 18.1 vs 13.7 s (1.33x), 18.5 vs 12.9 s (1.43x, write oracle on). Within one start, the ten concurrent blocklist
commands are folded by the monitors into the same Paxos round (each ~0.6-1.0 s, all
done within the same second), and most of a start waits for the monitors' new quorum
after the crash, as the single VM's does.

VMCEPH_E2E_MASS_LAB names the lab (default mass). VMCEPH_E2E_MASS_PROPS="name=value ..."
sets cluster properties after the configuration, for experiments: the figures without
the example's limits come from "load-threshold=80% node-action-limit=0".
"""

import concurrent.futures
import os
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from vmlab import Lab, cluster_config  # noqa: E402
from vmlab.cluster_config import configure, release_preferences  # noqa: E402
from vmlab.invariants import InvariantChecker  # noqa: E402
from vmlab.owner import owning  # noqa: E402
from vmlab.story import Story  # noqa: E402
from vmlab.util import LabError, pacemaker_lab_missing, wait_until  # noqa: E402
from vmlab.writeoracle import WriteOracle  # noqa: E402

LAB_NAME = os.environ.get("VMCEPH_E2E_MASS_LAB", "mass")
MASS_NODE, SINGLE_NODE = "node3", "node2"
MASS = [f"vm{k}" for k in range(1, 11)]
SINGLE = "vm11"
LOST_AFTER_S = 150.0
# the write oracle (vmlab/writeoracle.py) writes through these all along: the example's
# three VMs among the ten, and the single one. Not all eleven: each write is three virsh
# calls, and eleven writers on the lab's two shared cores would slow the very starts
# being measured.
ORACLE_VMS = ["vm1", "vm2", "vm3", SINGLE]




@pytest.fixture(scope="module")
def lab_figure():
    """For the module-scoped lab fixture (conftest's `figure` is per test): prints like
    conftest.record; the test's own figures go through `figure` into the run's summary."""
    def record(key, value):
        print(f"FIGURE {key}: {value}")
    return record


@pytest.fixture(scope="module")
def mass_lab(lab_figure):
    figure = lab_figure
    why = pacemaker_lab_missing()
    if why:
        pytest.skip("!!! MASS-FAILOVER END-TO-END TEST NOT RUN: " + why + " !!!")
    lab = Lab(name=LAB_NAME, nodes=3, pacemaker=True, node_prefix="node", token_ms=1000,
              project_root=str(ROOT), ceph_conf_extra={"mon lease": 2})
    prefer = {**{vm: MASS_NODE for vm in MASS}, SINGLE: SINGLE_NODE}
    with owning(lab):
        lab.down()
        checker = None
        t0 = time.monotonic()
        try:
            lab.up()
            figure("mass lab: up (s)", round(time.monotonic() - t0, 1))
            cfg = configure(lab, vms={vm: 1 for vm in MASS + [SINGLE]}, prefer=prefer,
                            timeout=300)
            figure("mass lab: configure 11 VMs (s)", cfg.timings.get("total_s"))
            release_preferences(lab, prefer)
            for prop in filter(None, os.environ.get("VMCEPH_E2E_MASS_PROPS", "").split()):
                name, value = prop.split("=", 1)   # an experiment: cluster properties
                lab.run(1, ["crm_attribute", "--type", "crm_config", "--name", name,
                            "--update", value], timeout=60)
                figure(f"mass lab: property {name}", value)
            # lost_after: the time a recovery may take before a VM counts as lost; ten
            # starts on two busy survivors take longer than the checker's default 45 s
            checker = InvariantChecker(lab, cfg.vms, lost_after=LOST_AFTER_S, log=print).start()
            yield lab, cfg, checker
        finally:
            if checker is not None:
                checker.stop()
                figure("mass lab: invariant checker", checker.report())
            keep_logs(lab)
            lab.down()


def keep_logs(lab):
    """Each node's pacemaker.log (the agents' lines and the controller's) copied to
    /tmp/vmlab/<lab>-logs/ before the lab's state dir goes: where the time went."""
    dest = f"/tmp/vmlab/{lab.name}-logs"
    os.makedirs(dest, exist_ok=True)
    for i in lab.indexes:
        try:
            shutil.copy(lab.node_dir(i, "log-pacemaker", "pacemaker.log"),
                        os.path.join(dest, f"{lab.node_name(i)}-pacemaker.log"))
        except OSError as e:
            print(f"pacemaker.log of {lab.node_name(i)} not kept: {e}")


def crash_until_writing(story, victim_i, timeout):
    """Power node victim_i off; poll the survivors until every VM it ran runs there
    (virsh) and has written through its QEMU (lab.guest_write). Returns
    {"vms", "writing": {vm: (node, s after the power-off)}, "fenced_s", "violations"}."""
    lab, checker = story.lab, story.checker
    story.settle()
    victim = lab.node_name(victim_i)
    vms = sorted(vm for vm, nodes in story.where().items() if victim in nodes)
    checker.move_off(victim_i)
    story.logs.mark()
    mark = len(checker.violations)
    t0, w0 = time.monotonic(), time.time()
    lab.crash(victim_i)
    survivors = [i for i in lab.indexes if i != victim_i]
    writing, fenced, trying = {}, None, {}

    def write(i, vm):
        try:
            lab.guest_write(i, vm)
        except LabError as e:   # resumed a moment ago, or not yet: the next round retries
            print(f"{vm} on {lab.node_name(i)}: no write yet: {e}")
            return None
        return lab.node_name(i), round(time.monotonic() - t0, 2)

    # one `virsh list` per survivor and round; the writes in a pool, so that ten VMs
    # resumed together are not timed one write after the other
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(vms)) as pool:
        while len(writing) < len(vms) or fenced is None:
            if time.monotonic() - t0 > timeout:
                raise LabError(f"crash of {victim}: within {timeout}s only {sorted(writing)} "
                               f"of {vms} wrote on a survivor (fenced: {fenced})")
            for vm, f in list(trying.items()):
                if f.done():
                    del trying[vm]
                    if f.result() is not None:
                        writing[vm] = f.result()
            for i in survivors:
                out = lab.run(i, ["virsh", "-c", "qemu:///system", "list", "--name",
                                  "--state-running"], timeout=15, check=False)
                for vm in sorted(set(out.stdout.split()) & set(vms) - set(writing)
                                 - set(trying)):
                    trying[vm] = pool.submit(write, i, vm)
            if fenced is None:
                done = story.fence_completed(victim_i, w0, survivors[0])
                fenced = None if done is None else max(0.0, done - w0)
            time.sleep(0.2)
    # Pacemaker agrees: each VM active exactly once, on the node that runs it
    wait_until(lambda: all(story.where()[vm] == [writing[vm][0]] for vm in vms),
               timeout=60, interval=0.5, what="Pacemaker showing every VM where it writes")
    checker.wait_samples(2)
    return {"victim": victim, "vms": vms, "writing": writing, "fenced_s": fenced,
            "last_s": max(t for _, t in writing.values()),
            "violations": checker.since(mark), "timeline": timeline(story, vms, survivors)}


STEP = re.compile(r"^\w+ +\d+ ([\d:]+) (\S+) RBDVirtualDomain\((\S+)\)\[\d+\]: \w+: "
                  r"(start decision|blocklisted|broke the exclusive lock|.* created paused|"
                  r"domain \S+ started|.*not confirmed yet|.*not possible yet)")


def timeline(story, vms, survivors):
    """{vm: [(time of day, node, step)]}: the agents' own log lines of each start (one
    second resolution), to see where the time went."""
    out = {vm: [] for vm in vms}
    for i in survivors:
        for line in story.logs.lines(i):
            m = STEP.match(line)
            if m and m.group(3) in out:
                out[m.group(3)].append((m.group(1), m.group(2), m.group(4)[:40]))
    return out


RESULT = re.compile(r"Result of (\S+) operation for (vm\d+)(?::\d+)? on (\S+): (\S+)")


def controller_results(logs, vms):
    """{vm: {(operation, node, result)}} of the controllers' 'Result of OP operation for VM
    on NODE' lines since logs.mark() (deduplicated: the DC may repeat a node's line)."""
    out = {vm: set() for vm in vms}
    for i in lab_nodes(logs.lab):
        for line in logs.lines(i, agent_only=False):
            m = RESULT.search(line)
            if m and m.group(2) in out and m.group(1) != "monitor":
                out[m.group(2)].add((m.group(1), m.group(3), m.group(4)))
    return out


def lab_nodes(lab):
    return getattr(lab, "all_indexes", lab.indexes)


def op_history(lab):
    """{(node, vm): {op id: (operation, rc-code)}} from the CIB's status section: a VM
    that came by live migration has a migrate_from entry on its target, a restarted one a
    start as its last_0."""
    root = ET.fromstring(lab.run(lab.first_alive(), ["cibadmin", "-Q", "-o", "status"],
                                 timeout=30).stdout)
    return {(state.get("uname"), rsc.get("id")): {op.get("id"): (op.get("operation"),
                                                                 op.get("rc-code"))
                                                  for op in rsc.iterfind("lrm_rsc_op")}
            for state in root.iter("node_state") for rsc in state.iter("lrm_resource")}


def evacuate(story, node_i, vms, timeout, trigger):
    """trigger() (`pcs node standby`, or the node's #health-ceph set red): poll until
    Pacemaker shows each of vms on exactly one other node and no QEMU of them is left on
    node_i. Returns ({vm: (node, s)}, total s), timed from the trigger."""
    lab, name = story.lab, story.lab.node_name(node_i)
    t0 = time.monotonic()
    trigger()
    arrived = {}
    while True:
        try:
            where = story.where()
        except (LabError, ET.ParseError):
            where = {}
        for vm in vms:
            nodes = where.get(vm, [])
            if vm not in arrived and len(nodes) == 1 and nodes[0] != name:
                arrived[vm] = (nodes[0], round(time.monotonic() - t0, 2))
        if len(arrived) == len(vms):
            left = lab.run(node_i, ["virsh", "-c", "qemu:///system", "list", "--name"],
                           timeout=15, check=False).stdout.split()
            if not set(vms) & set(left):
                return arrived, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise LabError(f"standby of {name}: within {timeout}s only {sorted(arrived)} of "
                           f"{vms} left it")
        time.sleep(0.25)


def place_back(story, vms, node, timeout):
    """Put vms back on node for the crash test (its starting point) by stopping them and
    starting them there under INFINITY preferences, as configure() placed them (the same
    ids, so release_preferences removes them; one cibadmin call each, pcs costs ~1-2 s a
    call here). Not by live migration: in the first runs (2026-12-01), one to three of
    the live migrations of each run made the invariant checker report two-writers at the
    handover (QEMUs "running" on both nodes, or the target's state "unknown", which it
    counts as running), the write oracle seeing no second writer (chaos-findings 1): ten
    more migrations here would be ten more chances. This step only restores the crash
    test's starting point."""
    lab, checker = story.lab, story.checker
    t0 = time.monotonic()
    for vm in vms:
        checker.expect_down(vm)
        lab.run(lab.first_alive(), ["crm_resource", "-r", vm, "--meta", "-p", "target-role",
                                    "-v", "Stopped"], timeout=60)
    wait_until(lambda: not any(story.where()[vm] for vm in vms), timeout=timeout,
               interval=0.5, what=f"{vms} stopped")
    for vm in vms:
        lab.run(lab.first_alive(), ["cibadmin", "-C", "-o", "constraints", "-X",
                                    f'<rsc_location id="location-{vm}-{node}-INFINITY" '
                                    f'rsc="{vm}" node="{node}" score="INFINITY"/>'],
                timeout=60)
    for vm in vms:
        lab.run(lab.first_alive(), ["crm_resource", "-r", vm, "--meta", "-p", "target-role",
                                    "-v", "Started"], timeout=60)
    wait_until(lambda: all(story.where()[vm] == [node] for vm in vms), timeout=timeout,
               interval=0.5, what=f"{vms} started on {node}")
    for vm in vms:
        checker.expect_down(vm, down=False)
    took = time.monotonic() - t0
    release_preferences(lab, {vm: node for vm in vms})
    story.settle(timeout=180)
    return took


def test_standby_of_a_node_with_ten_vms_live_migrates_them_all(mass_lab, figure):
    """Evacuation (issue 15, item 3): `pcs node standby node3` with vm1..vm10 on it. Every
    VM must be live-migrated (migrate_to on node3, migrate_from on its target, never a
    start: the target's QEMU is the migration's, the guest not rebooted), run exactly once
    elsewhere and write there; the invariant checker and the write oracle see no second
    writer and no acknowledged write lost. Measured against one single live migration of
    the same kind (`crm resource move` of vm11, a copy of the same VM, node2 -> node1),
    timed the same way: from the command to Pacemaker showing the VM(s) on the target
    and no QEMU left on the source.
    cib-examples sets migration-limit=2: at most two migrations at once per node, so
    node3's ten go out two by two (the lower bound is ~5 single migrations, not 1). The
    total is a figure, not an assertion. Runs first: the crash test needs the ten VMs on
    node3, where this test puts them back afterwards."""
    lab = mass_lab[0]
    first = lab.first_alive()

    def standby():
        lab.run(first, ["pcs", "node", "standby", MASS_NODE], timeout=60)

    def unstandby(story):
        lab.run(first, ["pcs", "node", "unstandby", MASS_NODE], timeout=60)
        wait_until(lambda: _online(story, MASS_NODE), timeout=120, interval=0.5,
                   what=f"{MASS_NODE} out of standby")
    _evacuation(mass_lab, figure, "evacuation", lambda: None, standby, unstandby)


def test_red_health_of_a_node_with_ten_vms_live_migrates_them_all(mass_lab, figure):
    """The same evacuation through node-health-strategy=migrate-on-red (issue 15, item 3):
    node3's #health-ceph turns red with vm1..vm10 on it, and Pacemaker must live-migrate
    all ten away, none restarted, both oracles clean.

    Red is set by hand (CephHealth banned from node3 first, so that its next monitor does
    not write green over it), as an administrator or another health agent would: a red that
    CephHealth itself writes means node3 cannot reach Ceph, and then no live migration can
    work (the source's QEMU cannot hand its images over; the storage-cut test of
    test_fence_vmceph_e2e.py shows that path: migrate_to fails, stop, start elsewhere).
    What is measured here is Pacemaker's migrate-on-red with these agents and limits."""
    lab = mass_lab[0]
    first = lab.first_alive()

    def ban_health():
        lab.run(first, ["crm_resource", "--ban", "-r", "ceph-health-clone", "-N", MASS_NODE],
                timeout=30)
        wait_until(lambda: MASS_NODE not in cluster_config.placement(lab, first).get(
            "ceph-health", []), timeout=60, interval=0.5,
            what=f"CephHealth stopped on {MASS_NODE}")

    def red():
        lab.run(first, ["attrd_updater", "-N", MASS_NODE, "-n", "#health-ceph", "-U", "red"],
                timeout=30)

    def green_again(story):
        lab.run(first, ["crm_resource", "--clear", "-r", "ceph-health-clone"], timeout=30)
        wait_until(lambda: cluster_config.health(lab, first).get(MASS_NODE) == "green",
                   timeout=120, interval=0.5, what=f"#health-ceph green on {MASS_NODE}")
    _evacuation(mass_lab, figure, "migrate-on-red evacuation", ban_health, red, green_again)


def _evacuation(mass_lab, figure, label, prepare, trigger, undo):
    """One evacuation of node3's ten VMs by trigger(), measured and judged as the standby
    test's docstring says; undo(story) returns node3 to service, and the ten are put back
    on node3 (place_back) for the next test."""
    lab, cfg, checker = mass_lab
    story = Story(lab, cfg, checker, say=print)
    story.settle(timeout=180)
    where = story.where()
    assert all(where[vm] == [MASS_NODE] for vm in MASS), where
    mass_i = story.index(MASS_NODE)
    mark = len(checker.violations)

    # one single live migration there and back: vm11, a copy of the same VM, node2 ->
    # node1 and back (not into node3: see place_back)
    out = story.live_migrate(SINGLE, "node1", timeout=180)
    back = story.live_migrate(SINGLE, SINGLE_NODE, timeout=180)
    for m in (out, back):
        assert m["migrate_to_logged"] and not m["cold_start_on_target"], m
        assert not m["violations"], m["violations"]
    single_s = out["took_s"]
    story.settle(timeout=180)

    oracle = WriteOracle(lab, [{"name": vm, "image": cfg.vms[vm][0]} for vm in ORACLE_VMS],
                         period_s=1.0, log=print).start()
    try:
        for vm in ORACLE_VMS:
            oracle.wait_acked(vm, 2, timeout=60)
        prepare()
        story.logs.mark()
        arrived, total_s = evacuate(story, mass_i, MASS, timeout=400, trigger=trigger)
        story.settle(timeout=180)
        results = controller_results(story.logs, MASS)
        history = op_history(lab)
        print("CIB history of vm1 on its target:", history.get((arrived["vm1"][0], "vm1")))
        targets = {vm: node for vm, (node, _) in arrived.items()}
        migrated_logged = {vm: bool(story.logs.grep(
            rf"live-migrating {vm} to {targets[vm]}", nodes=[mass_i])) for vm in MASS}
        cold = story.logs.grep(r"domain vm\d+ started",
                               nodes=[i for i in lab.indexes if i != mass_i])
        jobs = {}
        for vm in MASS:
            stats = story.logs.grep(rf"migration of {vm} from {MASS_NODE}: took (\d+) ms",
                                    nodes=[story.index(targets[vm])])
            jobs[vm] = int(re.search(r"took (\d+) ms", stats[-1][1]).group(1)) if stats \
                else None
        # the guest writes on its target, through the QEMU the migration created
        for vm in MASS:
            lab.guest_write(story.index(targets[vm]), vm)
        undo(story)
        checker.wait_samples(2)
        evac_violations = checker.since(mark)
        t_after = time.monotonic()
        for vm in ORACLE_VMS:   # each writes again after the evacuation
            oracle.wait_acked(vm, 2, timeout=90, since=t_after)
        result = oracle.check()
    finally:
        oracle.stop()
    print(result)
    return_s = place_back(story, MASS, MASS_NODE, timeout=400)

    figure(f"mass lab: {label}, single live migration node2 -> node1 (s)",
           round(single_s, 2))
    figure(f"mass lab: {label}, single live migration back node1 -> node2 (s)",
           round(back["took_s"], 2))
    figure(f"mass lab: {label}, sum of 10 single migrations (s)", round(10 * single_s, 1))
    figure(f"mass lab: {label}, trigger -> all 10 VMs off node3 (s, "
           "migration-limit=2: two at a time)", round(total_s, 1))
    figure(f"mass lab: {label}, total / sum of 10 singles (not asserted)",
           round(total_s / (10 * single_s), 2))
    figure(f"mass lab: {label}, each VM on its target (node, s)", dict(
        sorted(arrived.items(), key=lambda kv: kv[1][1])))
    figure(f"mass lab: {label}, each migration job (ms, the agent's log)", jobs)
    figure(f"mass lab: {label}, the 10 VMs back on node3 (stop, start) for the next test "
           "(s)", round(return_s, 1))
    figure(f"mass lab: {label}, write oracle (acknowledged, failed, timed out; longest "
           "gap per VM s)", (result.writes, result.failed, result.timeouts,
                             {vm: round(g, 2) for vm, g in result.longest_gap_s.items()}))

    assert sorted(arrived) == sorted(MASS), arrived
    assert all(node != MASS_NODE for node in targets.values()), targets
    for vm in MASS:
        ops = results[vm]
        assert ("migrate_to", MASS_NODE, "ok") in ops, (vm, ops)
        assert ("migrate_from", targets[vm], "ok") in ops, (vm, ops)
        assert not [op for op in ops if op[0] == "start"], (vm, "restarted", ops)
        assert not [op for op in ops if op[0] == "stop" and op[1] != MASS_NODE], (vm, ops)
        ops = history.get((targets[vm], vm), {})
        assert ("migrate_from", "0") in ops.values(), (vm, ops)
        assert ops.get(f"{vm}_last_0", ("",))[0] != "start", (vm, ops)
        assert migrated_logged[vm], (vm, "no live-migrating line on node3")
    assert cold == [], cold
    assert evac_violations == [], evac_violations
    assert result.read_errors == {}, result.read_errors
    assert result.violations == [], "\n".join(map(repr, result.violations))
    assert result.lost_acked == [], "\n".join(map(repr, result.lost_acked))
    checker.assert_clean(mark)


def _online(story, node):
    root = cluster_config.crm_mon_xml(story.lab)
    return any(n.get("name") == node and n.get("online") == "true"
               and n.get("standby") == "false" for n in root.iterfind("nodes/node"))


def test_ten_vms_of_a_crashed_node_all_write_again_on_the_survivors(mass_lab, figure):
    lab, cfg, checker = mass_lab
    story = Story(lab, cfg, checker, say=print)
    where = story.where()
    assert all(where[vm] == [MASS_NODE] for vm in MASS), where
    assert where[SINGLE] == [SINGLE_NODE], where
    for vm in MASS:
        lab.guest_write(story.index(MASS_NODE), vm)
    oracle = WriteOracle(lab, [{"name": vm, "image": cfg.vms[vm][0]} for vm in ORACLE_VMS],
                         period_s=1.0, log=print).start()
    try:
        for vm in ORACLE_VMS:
            oracle.wait_acked(vm, 2, timeout=60)
        one, many = _both_failovers(story, figure)
        t_after = time.monotonic()
        for vm in ORACLE_VMS:   # each writes again, through its QEMU on a survivor
            oracle.wait_acked(vm, 2, timeout=60, since=t_after)
        result = oracle.check()
    finally:
        oracle.stop()
    print(result)
    figure("mass lab: write oracle (writes acknowledged, failed, timed out)",
           (result.writes, result.failed, result.timeouts))
    figure("mass lab: write oracle, longest gap per VM (s)",
           {vm: round(gap, 2) for vm, gap in result.longest_gap_s.items()})

    assert one["vms"] == [SINGLE], one
    assert one["writing"][SINGLE][0] != SINGLE_NODE, one
    assert not one["violations"], one["violations"]
    assert many["vms"] == sorted(MASS), many
    assert all(node != MASS_NODE for node, _ in many["writing"].values()), many
    assert not many["violations"], many["violations"]
    final = story.where()
    assert all(len(final[vm]) == 1 and final[vm][0] != MASS_NODE for vm in MASS), final
    assert result.read_errors == {}, result.read_errors
    assert result.violations == [], "\n".join(map(repr, result.violations))
    assert result.lost_acked == [], "\n".join(map(repr, result.lost_acked))
    checker.assert_clean()


def _both_failovers(story, figure):
    """The single-VM failover (node2), node2's rejoin, the ten-VM failover (node3), their
    figures; asserted on by the caller once the write oracle has judged."""
    single_i = story.index(SINGLE_NODE)
    one = crash_until_writing(story, single_i, timeout=180)
    figure("mass lab: single-VM failover, crash -> fenced (s)", one["fenced_s"])
    figure("mass lab: single-VM failover, crash -> the VM writing (s)", one["last_s"])
    figure("mass lab: single-VM failover, agent steps", one["timeline"])
    rejoined = story.rejoin(single_i)
    figure("mass lab: node2 rejoined (s)", round(rejoined["green_s"], 1))
    story.settle()

    many = crash_until_writing(story, story.index(MASS_NODE), timeout=300)
    per_vm = {vm: t for vm, (_, t) in sorted(many["writing"].items(), key=lambda kv: kv[1][1])}
    figure("mass lab: 10-VM failover, crash -> fenced (s)", many["fenced_s"])
    figure("mass lab: 10-VM failover, crash -> each VM writing (s)", per_vm)
    figure("mass lab: 10-VM failover, crash -> the LAST VM writing (s)", many["last_s"])
    figure("mass lab: 10-VM failover, placement after",
           {vm: node for vm, (node, _) in many["writing"].items()})
    figure("mass lab: 10-VM failover, agent steps", many["timeline"])
    figure("mass lab: last of 10 VMs / single VM (target <= 1.5, not asserted)",
           round(many["last_s"] / one["last_s"], 2))
    return one, many
