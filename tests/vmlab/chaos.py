"""A seeded fault soak on the three-node Pacemaker lab (issue 11, items 3-5):

    python3 -m vmlab chaos --seed 7 --faults 12 [--agent rbd|virtualdomain] [--kinds a,b]
                           [--report docs/reliability.md]

The lab comes up and is configured from cib-examples/pcs.sh (cluster_config.py), or an e2e
test hands its session cluster in (run_soak). Every VM is written to all the time (Writers:
one stamped 4 KiB write per VM and second through each running QEMU of the VM, HMP
qemu-io, as lab.guest_write does), and random.Random(seed) draws a schedule of faults
from FAULTS. After each fault the harness heals it, waits (bounded) until the cluster has
settled, and records:

- the oracles' verdicts since the fault: the watcher checker (invariants.py) and, when
  present, the write oracle (writeoracle.py), each behind the small Oracle interface;
- that every VM runs exactly once: Pacemaker places it on one node AND the /proc scan
  finds exactly one QEMU of it (a QEMU Pacemaker forgot is a second writer waiting);
- the time from the fault to every VM writing again (Writers.back_at).

A fault kind is a function f(soak, rng) -> detail dict that injects the fault and heals
it; the common settle and checks run after it (Soak.play_one). A kind that cannot run
(say no VM to kill) raises Skip and is drawn again.

The canary (run_canary): the same harness with ocf:heartbeat:VirtualDomain as the VMs'
agent and a fault it cannot survive: fencing disabled and the cluster stack of the VM's
node killed (its QEMU keeps running, the majority starts the VM again elsewhere). Both
oracles must fire; a checker that never fired is not evidence.
"""

import json
import os
import random
import signal
import statistics
import threading
import time

from . import cluster_config, netns
from .invariants import InvariantChecker, QemuScan
from .util import LabError, wait_until

SETTLE_S = 240          # the bound on healing + settling after one fault
WRITE_INTERVAL = 0.5    # s between two writes of a VM (the write oracle's period)
SLOW_WRITE_S = 5.0      # an acknowledged write slower than this counts as a stall (the
                        # write is nsenter + two virsh calls: ~2 s under this machine's load)
CEPH_PORTS = ["3300", "6789", "6800:7300"]   # msgr2 + msgr1 mon ports, OSD port range
COROSYNC_PORT = "5405"  # knet's default (nodefiles: transport knet, no port set)


class Skip(Exception):
    """The fault cannot be played on the cluster as it is; draw another."""


# ---------------------------------------------------------------------- writes
class Write:
    __slots__ = ("vm", "node", "pid", "gen", "t0", "t1", "ok", "status")

    def __init__(self, vm, node, pid, gen, t0, t1, status):
        self.vm, self.node, self.pid, self.gen = vm, node, pid, gen
        self.t0, self.t1, self.status = t0, t1, status
        self.ok = status == "acked"


class Writers:
    """The VMs' writes as the harness reads them (which VM wrote when, from which node,
    acknowledged or not). The writing itself is the write oracle's (writeoracle.py: a
    stamped 4 KiB block per VM every 0.5 s through every running QEMU of the VM)."""

    def __init__(self, oracle, vms):
        self.oracle, self.vms = oracle, list(vms)

    @property
    def writes(self):
        return [w for vm in self.vms for w in self.of(vm)]

    def of(self, vm, since=0.0, until=float("inf")):
        return [Write(vm, r["node"], r["pid"], r["gen"], r["t0"], r["t1"], r["status"])
                for r in self.oracle.records(vm)
                if r["t1"] is not None and since <= r["t0"] <= until]

    # ------------------------------------------------------------------ reading them
    def back_at(self, vm, t_fault, t_end):
        """Seconds from t_fault until vm wrote again for good: the completion of the first
        fast acknowledged write issued after the last failed or stalled write of
        [t_fault, t_end] (after t_fault itself if none failed). None if it never did."""
        ws = sorted(self.of(vm, t_fault, t_end), key=lambda w: w.t0)
        bad = [w for w in ws if not w.ok or w.t1 - w.t0 > SLOW_WRITE_S]
        after = bad[-1].t0 if bad else t_fault
        good = [w for w in ws if w.t0 > after and w.ok and w.t1 - w.t0 <= SLOW_WRITE_S]
        return round(good[0].t1 - t_fault, 1) if good else None

    def longest_gap(self, vm, t0, t1):
        """Longest time without an acknowledged write of vm within [t0, t1]."""
        acks = sorted(w.t1 for w in self.of(vm) if w.ok and t0 <= w.t1 <= t1)
        edges = [t0, *acks, t1]
        return round(max(b - a for a, b in zip(edges, edges[1:])), 1)


# ---------------------------------------------------------------------- oracles
class WatcherOracle:
    """The watcher checker (invariants.py) behind the harness's Oracle interface:
    mark() -> token; since(token) -> [violation text]; before(i)/after(i) around a fault
    that takes node i away; report() -> dict; stop()."""

    name = "watcher checker"

    def __init__(self, checker, own=False):
        self.checker, self.own = checker, own

    @classmethod
    def start(cls, lab, vms):
        return cls(InvariantChecker(lab, vms, log=lambda m: None).start(), own=True)

    def mark(self):
        return len(self.checker.violations)

    def since(self, mark):
        return [repr(v) for v in self.checker.since(mark)]

    def before(self, i):
        self.checker.move_off(i)

    def after(self, i):
        self.checker.allow(i)

    def report(self):
        return self.checker.report()

    def stop(self):
        if self.own:
            self.checker.stop()


class WriteOracleView:
    """The write oracle (writeoracle.py, issue 11 item 1) behind the same interface. Its
    check() judges everything written since start (it reads the images back); since()
    returns the findings that are new since the mark."""

    name = "write oracle"

    def __init__(self, oracle):
        self.oracle = oracle
        self.seen = set()
        self.last = None

    @classmethod
    def start(cls, lab, cfg, log=None):
        from .writeoracle import WriteOracle
        vms = [{"name": vm, "image": images[0]} for vm, images in sorted(cfg.vms.items())]
        return cls(WriteOracle(lab, vms, log=log).start())

    def check(self):
        self.last = self.oracle.check()
        found = [f"{f.kind}: {f.text}" for f in self.last.violations]
        found += [f"lost acknowledged write: {f.text}" for f in self.last.lost_acked]
        found += [f"image not read: {vm}: {why}" for vm, why in self.last.read_errors.items()]
        return found

    def mark(self):
        return None

    def since(self, _mark):
        found = self.check()
        new = [f for f in found if f not in self.seen
               and not f.startswith("image not read")]
        self.seen.update(found)
        return new + [f for f in found if f.startswith("image not read")]

    def before(self, i):
        pass

    def after(self, i):
        pass

    def report(self):
        r = self.last or self.oracle.check()
        return {"acknowledged": r.writes, "attempts": r.attempts, "failed": r.failed,
                "timeouts": r.timeouts, "violations": len(r.violations),
                "lost_acked": len(r.lost_acked), "unverified": r.unverified,
                "read_errors": dict(r.read_errors),
                "longest_gap_s": {vm: round(g, 1) for vm, g in r.longest_gap_s.items()}}

    def stop(self):
        self.oracle.stop()
        self.last = self.oracle.check()   # the final verdict, with every write landed


# ---------------------------------------------------------------------- the soak
class Soak:
    def __init__(self, lab, cfg, oracles, writers, seed, log=print, settle_s=SETTLE_S):
        self.lab, self.cfg, self.oracles, self.writers = lab, cfg, oracles, writers
        self.seed, self.rng, self.log, self.settle_s = seed, random.Random(seed), log, settle_s
        self.records = []
        self.t0 = time.monotonic()
        self.stop_reason = None   # set by request_stop(): no further fault begins

    # ------------------------------------------------------------------ looking
    def where(self):
        """{vm: [nodes Pacemaker runs it on]}."""
        where = cluster_config.placement(self.lab)
        return {vm: where.get(vm, []) for vm in self.cfg.vms}

    def index(self, name):
        return next(i for i in self.lab.indexes if self.lab.node_name(i) == name)

    def node_of(self, vm):
        nodes = self.where()[vm]
        if len(nodes) != 1:
            raise Skip(f"{vm} runs on {nodes}")
        return self.index(nodes[0])

    def qemus(self):
        found, _ = QemuScan(self.lab, self.cfg.vms).scan()
        return found

    def busy_node(self):
        """A node that runs at least one VM (drawn by the rng)."""
        names = sorted({n for nodes in self.where().values() for n in nodes})
        if not names:
            raise Skip("no VM runs")
        return self.index(self.rng.choice(names))

    def vms_on(self, i):
        return [vm for vm, nodes in self.where().items() if self.lab.node_name(i) in nodes]

    # ------------------------------------------------------------------ healing
    def boot_again(self, i, recovery_s=90):
        """A node that is down (fenced) boots again and rejoins, once every VM writes again
        from another node (at most recovery_s): a real server takes longer to come back
        than the lab's node (7-15 s).

        "Runs elsewhere" is read from the VMs' own acknowledged writes, not from
        Pacemaker's placement: in seed 1205's fault 14 the placement of a VM whose
        migration the crash interrupted already named the target, whose incoming QEMU never
        ran; the node was back within 10 s, before the VM ran anywhere, and the lock its
        dead QEMU held was then a live member's (the agent refuses that: a known limit,
        docs/reliability.md)."""
        if not self.lab.alive(i):
            name = self.lab.node_name(i)
            down_at = time.monotonic()

            def recovered():
                where = self.where()
                return all(nodes and name not in nodes for nodes in where.values()) and all(
                    any(w.ok and w.t0 > down_at and w.node != name
                        for w in self.writers.of(vm, down_at)) for vm in self.cfg.vms)
            try:
                wait_until(recovered, timeout=recovery_s, interval=1,
                           what=f"every VM writing from a node other than {name}")
            except LabError as exc:
                self.log(f"           {exc}; booting {name} anyway")
            self.lab.start_node(i, fence_timeout=90)
        self.oracles_after(i)

    def oracles_before(self, i):
        for o in self.oracles:
            o.before(i)

    def oracles_after(self, i):
        for o in self.oracles:
            o.after(i)

    def settle(self, deadline):
        """Every node up, Ceph healthy, Pacemaker online on all, every VM on one node
        with exactly one QEMU (Pacemaker may not have noticed a fault yet: a killed QEMU
        is seen at the next 10 s monitor), health green, no action running. Returns the
        operator actions it took: if the cluster has stopped acting and a VM still runs
        nowhere (its starts failed: banned), `crm_resource --cleanup`, as an administrator
        would; the fault then counts as not recovered on its own."""
        def left():
            return max(10, deadline - time.monotonic())
        for i in self.lab.indexes:
            if not self.lab.alive(i):
                self.boot_again(i)
        self.lab.wait_ceph_healthy(timeout=left())
        self.lab.wait_pacemaker_online(self.lab.nodes, timeout=left())
        actions = []
        while True:
            try:
                cluster_config.wait_settled(self.lab, self.cfg, timeout=min(60, left()))
                problems = self.exactly_once()
            except LabError as exc:
                problems = [str(exc).splitlines()[0]]
            if not problems:
                return actions
            if time.monotonic() > deadline:
                raise LabError("; ".join(problems))
            idle = self.lab.run(self.lab.first_alive(), ["crm_resource", "--wait", "-T", "5s"],
                                timeout=30, check=False).returncode == 0
            stopped = [vm for vm, nodes in self.where().items() if not nodes]
            if idle and stopped:
                failed = self.lab.run(self.lab.first_alive(), ["crm_mon", "-1"],
                                      timeout=30, check=False).stdout
                why = [line.strip() for line in failed.splitlines()
                       if any(f"{vm} " in line for vm in stopped) and "returned" in line]
                unlocked = [u for vm in stopped for u in self.unlock_dead_holders(vm)]
                actions.append({"cleanup": stopped, "failed": why[:6], "unlocked": unlocked})
                self.log(f"           {', '.join(stopped)} stopped for good: operator "
                         f"cleanup ({'; '.join(why[:3])}); blocklisted and unlocked "
                         f"{unlocked or 'nothing'}")
                self.lab.run(self.lab.first_alive(), ["crm_resource", "--cleanup"],
                             timeout=60, check=False)
            time.sleep(2)

    def unlock_dead_holders(self, vm):
        """What an administrator does when the agent refuses a lock holder with no watch
        (a QEMU that died holding the exclusive lock): blocklist that client instance
        (it can never write again), then remove its lock. Only holders without a watch
        on the image; returns ["image: address"]."""
        done = []
        i = self.lab.first_alive()
        for image in self.cfg.vms[vm]:
            spec = f"{self.lab.pool}/{image}"
            try:
                lockers = json.loads(self.lab.run(i, ["rbd", "lock", "ls", "--format", "json",
                                                      spec], timeout=30).stdout or "[]")
                watchers = json.loads(self.lab.run(i, ["rbd", "status", "--format", "json",
                                                       spec], timeout=30).stdout)["watchers"]
            except (LabError, ValueError, KeyError):
                continue
            live = {w.get("address") for w in watchers}
            for lk in lockers:
                if lk["address"] in live:
                    continue
                self.lab.run(i, ["ceph", "osd", "blocklist", "add", lk["address"]],
                             timeout=30, check=False)
                self.lab.run(i, ["rbd", "lock", "rm", spec, lk["id"], lk["locker"]],
                             timeout=30, check=False)
                done.append(f"{image}: {lk['address']}")
        return done

    def exactly_once(self):
        """[problem] if a VM is not placed on exactly one node, or has not exactly one
        QEMU in the lab, or they disagree."""
        problems = []
        where, qemus = self.where(), self.qemus()
        for vm in self.cfg.vms:
            nodes = sorted(self.lab.node_name(i) for i in qemus.get(vm, {}))
            if len(where[vm]) != 1 or nodes != where[vm]:
                problems.append(f"{vm}: Pacemaker runs it on {where[vm]}, QEMUs on {nodes}")
        return problems

    def fail_counts(self):
        """["vm on node: count"] of the fail counts Pacemaker keeps after a fault. A fault
        may be survived and still leave one (a killed start fails). With Pacemaker's
        start-failure-is-fatal=true that banned the VM from the node until failure-timeout
        (10 min): two of those and a cut third node left vm3 no node (seed 1205's fault
        37, seed 1208's 58, seed 1210's 120); cib-examples now set it false. The report
        shows them."""
        try:
            out = self.lab.run(self.lab.first_alive(),
                               ["crm_mon", "-1", "--output-as=xml", "--include=failcounts"],
                               timeout=30, check=False).stdout
            return parse_fail_counts(out)
        except LabError as exc:
            return [f"could not look: {str(exc).splitlines()[0][:120]}"]

    # ------------------------------------------------------------------ one fault
    def play_one(self, kind):
        fn = FAULTS[kind]
        marks = [o.mark() for o in self.oracles]
        t_fault = time.monotonic()
        rec = {"kind": kind, "t": round(t_fault - self.t0, 1), "t_abs": t_fault}
        self.log(f"[{rec['t']:7.1f}s] fault {len(self.records) + 1}: {kind}")
        error = None
        try:
            rec["detail"] = fn(self, self.rng) or {}
            rec["healed_s"] = round(time.monotonic() - t_fault, 1)
            rec["operator"] = self.settle(t_fault + self.settle_s)
        except LabError as exc:
            error = f"did not settle: {str(exc).splitlines()[0][:300]}"
        t_end = time.monotonic()
        rec["settled_s"] = round(t_end - t_fault, 1)
        time.sleep(2 * WRITE_INTERVAL + 1)  # every VM gets a write after the settle
        t_end = time.monotonic()
        rec["back_s"] = {vm: self.writers.back_at(vm, t_fault, t_end) for vm in self.cfg.vms}
        rec["gap_s"] = {vm: self.writers.longest_gap(vm, t_fault, t_end)
                        for vm in self.cfg.vms}
        rec["violations"] = {o.name: o.since(m) for o, m in zip(self.oracles, marks)}
        try:
            rec["not_once"] = self.exactly_once()
        except LabError as exc:
            rec["not_once"] = [f"could not look: {exc}"]
        rec["fail_counts"] = self.fail_counts()
        if error:
            rec["error"] = error
        backs = [b for b in rec["back_s"].values()]
        rec["all_back_s"] = None if None in backs else max(backs)
        rec["safe"] = not rec["not_once"] and not any(rec["violations"].values())
        rec["survived"] = (rec["safe"] and not error and not rec.get("operator")
                           and rec["all_back_s"] is not None)
        rec["t_end_abs"] = time.monotonic()
        self.records.append(rec)
        self.log(f"           {kind}: {'survived' if rec['survived'] else 'NOT SURVIVED'}; "
                 f"every VM writing again after {rec['all_back_s']} s; settled "
                 f"{rec['settled_s']} s; detail {rec.get('detail')}; "
                 + (f"error {error}; " if error else "")
                 + (f"not once {rec['not_once']}; " if rec["not_once"] else "")
                + (f"operator {rec['operator']}; " if rec.get("operator") else "")
                 + (f"fail counts left {rec['fail_counts']}; " if rec["fail_counts"] else "")
                 + "; ".join(f"{k}: {len(v)} violations" for k, v in rec["violations"].items()))
        for name, vs in rec["violations"].items():
            for v in vs:
                self.log(f"           VIOLATION ({name}): {v}")
        return rec

    def schedule(self, n, kinds):
        """n kinds drawn by the rng; with n >= len(kinds) each kind comes at least once
        (in an order the rng draws), the rest drawn at random."""
        kinds = list(kinds)
        plan = list(kinds) if n >= len(kinds) else []
        plan += [self.rng.choice(kinds) for _ in range(n - len(plan))]
        self.rng.shuffle(plan)
        return plan

    def run(self, n, kinds, stop_at=None):
        """Play the plan; with ``stop_at`` (a time.monotonic() value) no fault begins
        after it, and the report says how many of the plan were played."""
        plan = self.schedule(n, kinds)
        self.log(f"chaos seed {self.seed}: {len(plan)} faults: {', '.join(plan)}")
        for kind in plan:
            reason = self.stop_reason or (
                "time is up" if stop_at is not None and time.monotonic() > stop_at else None)
            if reason:
                self.log(f"{reason}: {len(self.records)} of {len(plan)} faults played")
                break
            for _attempt in range(3):
                try:
                    self.play_one(kind)
                    break
                except Skip as why:
                    self.log(f"           {kind} skipped ({why}); settling and retrying")
                    self.settle(time.monotonic() + self.settle_s)
        return self.records

    def request_stop(self, reason):
        """End the soak after the fault being played (it is healed and checked as any
        other), so that the report of what was played is still written."""
        self.stop_reason = reason


def _stopping_on_signals(soak):
    """The first SIGTERM or SIGINT asks the soak to stop after its current fault; a
    second one interrupts at once, as before. Returns the handlers to restore: a soak
    of 200 faults runs for two hours, and killing it used to lose its whole report
    (seed 1210's figures had to be read back from its log)."""
    def first(signum, _frame):
        name = signal.Signals(signum).name
        soak.log(f"{name}: stopping after the current fault (again to interrupt at once)")
        soak.request_stop(f"stopped by {name}")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if threading.current_thread() is not threading.main_thread():
        return {}   # signal.signal() works in the main thread only
    return {sig: signal.signal(sig, first) for sig in (signal.SIGTERM, signal.SIGINT)}


# ---------------------------------------------------------------------- helpers for faults
def _pids(lab, i, predicate):
    inode = lab.netns_inode(i)
    out = []
    for pid in netns.pids_in_netns(inode):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if predicate(comm, args, pid):
            out.append(pid)
    return out


def _kill(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(kv.split("=", 1) for kv in f.read().decode(errors="replace")
                        .split("\0") if "=" in kv)
    except OSError:
        return {}


def agent_pids(lab, vm, action, agent="RBDVirtualDomain"):
    """[(node, pid)] of the agent processes running ACTION for resource vm: one pass over
    /proc, the command line first (cheap), then the environment and the netns."""
    inodes = {lab.netns_inode(i): i for i in lab.indexes if lab.alive(i)}
    found = []
    key = agent.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if key not in raw:
            continue
        args = raw.decode(errors="replace").split("\0")
        if action not in args[1:4]:
            continue
        pid = int(entry)
        node = inodes.get(netns.pid_netns_inode(pid))
        if node is not None and _environ(pid).get("OCF_RESOURCE_INSTANCE") == vm:
            found.append((node, pid))
    return found


def _iptables(lab, i, rules, add=True):
    """Drop rules in node i's own netns (the host and the other nodes are untouched)."""
    op = "-I" if add else "-D"
    script = "; ".join(f"iptables -w {op} {chain} {rule} -j DROP"
                       for chain in ("INPUT", "OUTPUT") for rule in rules)
    lab.run(i, ["sh", "-c", script], timeout=30, check=False)


def _wait_down(lab, i, timeout):
    try:
        wait_until(lambda: not lab.alive(i), timeout=timeout, interval=0.5,
                   what=f"{lab.node_name(i)} fenced")
        return True
    except LabError:
        return False


def _crm(soak, *args, timeout=60, check=True):
    return soak.lab.run(soak.lab.first_alive(), ["crm", *args], timeout=timeout, check=check)


# ---------------------------------------------------------------------- the fault kinds
def f_crash(soak, rng):
    """Node power-off (a node running VMs); it boots again once fenced."""
    i = soak.busy_node()
    soak.oracles_before(i)
    soak.lab.crash(i)
    soak.boot_again(i)
    return {"node": soak.lab.node_name(i)}


def f_partition(soak, rng):
    """Full partition: the node's switch port goes down; the majority fences it."""
    i = soak.busy_node()
    soak.oracles_before(i)
    soak.lab.partition(i)
    fenced = _wait_down(soak.lab, i, 120)
    soak.lab.heal(i)
    soak.boot_again(i)
    return {"node": soak.lab.node_name(i), "fenced": fenced}


def f_corosync_partition(soak, rng):
    """Only corosync's traffic is cut (Ceph still reachable): the majority must fence the
    node before its VMs start elsewhere, its QEMUs still holding live Ceph sessions."""
    i = soak.busy_node()
    soak.oracles_before(i)
    _iptables(soak.lab, i, [f"-p udp --dport {COROSYNC_PORT}", f"-p udp --sport {COROSYNC_PORT}"])
    fenced = _wait_down(soak.lab, i, 120)
    if not fenced:
        _iptables(soak.lab, i, [f"-p udp --dport {COROSYNC_PORT}",
                                f"-p udp --sport {COROSYNC_PORT}"], add=False)
    soak.boot_again(i)
    return {"node": soak.lab.node_name(i), "fenced": fenced}


def f_storage_partition(soak, rng):
    """Only Ceph's traffic is cut (corosync up) for hold_s: the node's #health-ceph goes
    red and its VMs must leave it without ever two writers."""
    i = soak.busy_node()
    hold = rng.choice([20, 40])
    rules = [f"-p tcp --dport {p}" for p in CEPH_PORTS] + \
            [f"-p tcp --sport {p}" for p in CEPH_PORTS]
    soak.oracles_before(i)
    _iptables(soak.lab, i, rules)
    time.sleep(hold)
    if soak.lab.alive(i):
        _iptables(soak.lab, i, rules, add=False)
    soak.boot_again(i)
    return {"node": soak.lab.node_name(i), "held_s": hold, "fenced": not soak.lab.alive(i)}


def f_libvirtd_restart(soak, rng):
    """libvirtd SIGKILLed on a node running VMs, started again after a few seconds."""
    i = soak.busy_node()
    pid = soak.lab.daemon_pid(i, "libvirtd")
    if pid is None:
        raise Skip("no libvirtd")
    down = rng.choice([2, 5, 10])
    _kill([pid])
    time.sleep(down)
    if soak.lab.alive(i):
        soak.lab.spawn(i, "libvirtd", "exec libvirtd --listen")
    return {"node": soak.lab.node_name(i), "down_s": down}


def f_qemu_kill(soak, rng):
    """A VM's QEMU SIGKILLed: Pacemaker's monitor sees it gone and starts it again."""
    vm = rng.choice(sorted(soak.cfg.vms))
    qemus = soak.qemus()[vm]
    if len(qemus) != 1:
        raise Skip(f"{vm} has QEMUs on {sorted(qemus)}")
    (i, q), = qemus.items()
    _kill([q["pid"]])
    return {"vm": vm, "node": soak.lab.node_name(i)}


def f_qemu_kill_move(soak, rng):
    """A VM's QEMU SIGKILLed, and Pacemaker recovers it on ANOTHER node: the VM's
    migration-threshold is 1 for the fault, so the failed monitor bans it from its node.
    The start elsewhere cannot tell the dead QEMU's client from a live writer; the stop on
    the QEMU's node must have released it (vmceph.deadclients.release). Seen in the CI run
    of stop 18 (seed 11): Pacemaker chose another node by itself, and every start there
    was refused until an operator cleaned up."""
    vm = rng.choice(sorted(soak.cfg.vms))
    qemus = soak.qemus()[vm]
    if len(qemus) != 1:
        raise Skip(f"{vm} has QEMUs on {sorted(qemus)}")
    (i, q), = qemus.items()
    node = soak.lab.node_name(i)
    meta = ["crm_resource", "--resource", vm, "--meta"]
    soak.lab.run(soak.lab.first_alive(), meta + ["--set-parameter", "migration-threshold",
                                                 "--parameter-value", "1"], timeout=60)
    try:
        _kill([q["pid"]])
        moved = _await(lambda: [n for n in cluster_config.placement(soak.lab).get(vm, [])
                                if n != node], 120, 0.5)
    finally:
        soak.lab.run(soak.lab.first_alive(), meta + ["--delete-parameter",
                                                     "migration-threshold"],
                     timeout=60, check=False)
        # the ban is a fail count on the node: forget it (stickiness keeps the VM where it
        # now runs)
        soak.lab.run(soak.lab.first_alive(), ["crm_resource", "--cleanup", "--resource", vm,
                                              "--node", node], timeout=60, check=False)
    return {"vm": vm, "node": node, "moved_to": moved[0] if moved else None}


def f_osd_kill(soak, rng):
    """An OSD SIGKILLed, started again after down_s."""
    i = rng.choice(list(soak.lab.indexes))
    pid = soak.lab.daemon_pid(i, "osd")
    if pid is None:
        raise Skip("no OSD")
    down = rng.choice([5, 30])
    _kill([pid])
    time.sleep(down)
    if soak.lab.alive(i):
        soak.lab._spawn_osd(i)
    return {"node": soak.lab.node_name(i), "down_s": down}


def f_mon_stop(soak, rng):
    """One monitor stopped (quorum kept), started again after 10 s."""
    i = rng.choice(list(soak.lab.indexes))
    soak.lab.stop_mon(i)
    time.sleep(10)
    soak.lab.start_mon(i)
    return {"node": soak.lab.node_name(i)}


def f_quorum_loss(soak, rng):
    """Two of three monitors stopped: Ceph quorum lost for down_s, then regained."""
    nodes = rng.sample(list(soak.lab.indexes), 2)
    down = rng.choice([10, 30])
    for i in nodes:
        soak.lab.stop_mon(i)
    time.sleep(down)
    for i in nodes:
        soak.lab.start_mon(i)
    return {"nodes": [soak.lab.node_name(i) for i in nodes], "down_s": down}


def f_move_storm(soak, rng):
    """`crm resource move` of random VMs to random nodes in quick succession, then the
    move constraints cleared."""
    names = [soak.lab.node_name(i) for i in soak.lab.indexes]
    moves = []
    for _ in range(rng.randint(3, 6)):
        vm, node = rng.choice(sorted(soak.cfg.vms)), rng.choice(names)
        _crm(soak, "resource", "move", vm, node, check=False)
        moves.append(f"{vm}->{node}")
        time.sleep(rng.choice([0.2, 1, 3]))
    soak.lab.run(soak.lab.first_alive(), ["crm_resource", "--wait", "-T", "120s"],
                 timeout=150, check=False)
    for vm in soak.cfg.vms:
        _crm(soak, "resource", "clear", vm, check=False)
    return {"moves": moves}


def _start_move(soak, rng):
    """`crm resource move` of a random VM to a random other node, in the background (crm
    takes a second or two to return; the migration may be under way by then)."""
    vm = rng.choice(sorted(soak.cfg.vms))
    src = soak.node_of(vm)
    dst = rng.choice([i for i in soak.lab.indexes if i != src])
    threading.Thread(target=_crm, args=(soak, "resource", "move", vm,
                                        soak.lab.node_name(dst)),
                     kwargs={"check": False}, daemon=True).start()
    return vm, src, dst


def _await(pred, timeout, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(interval)
    return None


def f_migration_interrupted(soak, rng):
    """A live migration interrupted while it runs: source crashed, target crashed, or the
    target cut off the network."""
    how = rng.choice(["source-killed", "target-killed", "network-cut"])
    vm, src, dst = _start_move(soak, rng)
    # interrupt once the target QEMU exists (the migration is under way)
    seen = _await(lambda: dst in soak.qemus().get(vm, {}), 30)
    victim = src if how == "source-killed" else dst
    soak.oracles_before(victim)
    if how == "network-cut":
        soak.lab.partition(victim)
        _wait_down(soak.lab, victim, 120)
        soak.lab.heal(victim)
    else:
        soak.lab.crash(victim)
    _crm(soak, "resource", "clear", vm, check=False)
    soak.boot_again(victim)
    return {"vm": vm, "how": how, "source": soak.lab.node_name(src),
            "target": soak.lab.node_name(dst), "target_qemu_seen": bool(seen)}


def f_agent_kill_start(soak, rng):
    """The agent SIGKILLed in the middle of start: the VM's QEMU is killed, and the start
    Pacemaker then runs is killed as soon as it appears."""
    vm = rng.choice(sorted(soak.cfg.vms))
    qemus = soak.qemus()[vm]
    if len(qemus) != 1:
        raise Skip(f"{vm} has QEMUs on {sorted(qemus)}")
    _kill([q["pid"] for q in qemus.values()])
    agent = soak.agent_name
    got = _await(lambda: agent_pids(soak.lab, vm, "start", agent), 60, 0.02)
    if got:
        time.sleep(rng.choice([0, 0.3, 1.0]))
        _kill([pid for _, pid in got])
    return {"vm": vm, "killed": [soak.lab.node_name(i) for i, _ in got or []]}


def f_agent_kill_migrate(soak, rng):
    """The agent SIGKILLed in the middle of migrate_to (on the source)."""
    vm, src, dst = _start_move(soak, rng)
    got = _await(lambda: agent_pids(soak.lab, vm, "migrate_to", soak.agent_name), 60, 0.02)
    if got:
        time.sleep(rng.choice([0, 0.5, 1.5]))
        _kill([pid for _, pid in got])
    soak.lab.run(soak.lab.first_alive(), ["crm_resource", "--wait", "-T", "120s"],
                 timeout=150, check=False)
    _crm(soak, "resource", "clear", vm, check=False)
    return {"vm": vm, "source": soak.lab.node_name(src), "target": soak.lab.node_name(dst),
            "killed": bool(got)}


FAULTS = {
    "qemu-kill": f_qemu_kill,
    "qemu-kill-move": f_qemu_kill_move,
    "libvirtd-restart": f_libvirtd_restart,
    "osd-kill": f_osd_kill,
    "mon-stop": f_mon_stop,
    "quorum-loss": f_quorum_loss,
    "move-storm": f_move_storm,
    "crash": f_crash,
    "partition": f_partition,
    "corosync-partition": f_corosync_partition,
    "storage-partition": f_storage_partition,
    "migration-interrupted": f_migration_interrupted,
    "agent-kill-start": f_agent_kill_start,
    "agent-kill-migrate": f_agent_kill_migrate,
}
Soak.agent_name = "RBDVirtualDomain"


def parse_fail_counts(xml_text):
    """["vm on node: count"] from crm_mon --output-as=xml --include=failcounts (its
    node_history/node/resource_history elements carry fail-count). Pure."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(xml_text or "<x/>")
    except ET.ParseError:
        return ["could not look: crm_mon gave no XML"]
    out = []
    for node in root.iter("node"):
        for h in node.iter("resource_history"):
            fc = h.get("fail-count")
            if fc and fc != "0":
                out.append(f"{h.get('id')} on {node.get('name')}: {fc}")
    return sorted(set(out))


# ---------------------------------------------------------------------- summary
def summarize(records):
    """{kind: {count, survived, median_s, worst_s, violations: {oracle: n}}}."""
    out = {}
    for r in records:
        k = out.setdefault(r["kind"], {"count": 0, "survived": 0, "back": [],
                                       "violations": {}, "not_once": 0, "errors": 0,
                                       "operator": 0})
        k["count"] += 1
        k["survived"] += bool(r["survived"])
        if r["all_back_s"] is not None:
            k["back"].append(r["all_back_s"])
        for name, vs in r["violations"].items():
            k["violations"][name] = k["violations"].get(name, 0) + len(vs)
        k["not_once"] += bool(r["not_once"])
        k["errors"] += "error" in r
        k["operator"] += bool(r.get("operator"))
    for k in out.values():
        back = k.pop("back")
        k["median_s"] = round(statistics.median(back), 1) if back else None
        k["worst_s"] = max(back) if back else None
    return out


# ---------------------------------------------------------------------- running it
def make_oracles(lab, cfg, checker=None, log=None):
    """[watcher checker, write oracle]: the session's checker if given, else our own."""
    watcher = WatcherOracle(checker) if checker else WatcherOracle.start(lab, cfg.vms)
    return [watcher, WriteOracleView.start(lab, cfg, log=log)]


def run_soak(lab, cfg, seed, faults, kinds=None, checker=None, log=print, agent="rbd",
             max_minutes=None):
    """Play `faults` faults drawn with `seed` on a configured lab; returns the result dict
    (records, summary, oracle reports, the writes for the timeline)."""
    kinds = list(kinds or FAULTS)
    unknown = set(kinds) - set(FAULTS)
    if unknown:
        raise LabError(f"unknown fault kinds: {', '.join(sorted(unknown))} "
                       f"(known: {', '.join(FAULTS)})")
    oracles = make_oracles(lab, cfg, checker)
    writers = Writers(oracles[1].oracle, cfg.vms)
    soak = Soak(lab, cfg, oracles, writers, seed, log=log)
    soak.agent_name = "VirtualDomain" if agent == "virtualdomain" else "RBDVirtualDomain"
    t_start = time.monotonic()
    previous = _stopping_on_signals(soak)
    try:
        soak.settle(time.monotonic() + SETTLE_S)
        stop_at = t_start + max_minutes * 60 if max_minutes else None
        records = soak.run(faults, kinds, stop_at)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for o in oracles:
            o.stop()
    return {"seed": seed, "faults": faults, "kinds": kinds, "agent": agent,
            "records": records, "summary": summarize(records), "t0": t_start,
            "stopped": soak.stop_reason,
            "t_end": time.monotonic(), "writes": list(writers.writes),
            "oracles": {o.name: o.report() for o in oracles},
            "vms": sorted(cfg.vms), "nodes": [lab.node_name(i) for i in lab.indexes]}


# ---------------------------------------------------------------------- the canary
def f_unfenced_stack_kill(soak, rng):
    """The fault VirtualDomain cannot survive: fencing disabled (stonith-enabled=false),
    then corosync and Pacemaker of a node running a VM SIGKILLed. Its QEMUs keep running
    and writing; the majority, told nothing needs fencing, starts the VMs elsewhere.
    RBDVirtualDomain refuses those starts (a live watch on a node never fenced);
    VirtualDomain starts a second QEMU. Held hold_s so both oracles can see it, then the
    node is powered off and booted again and fencing enabled again."""
    lab = soak.lab
    i = soak.busy_node()
    vms = soak.vms_on(i)
    hold = 15
    first = next(j for j in lab.indexes if j != i)
    lab.run(first, ["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v",
                    "false"], timeout=30)
    time.sleep(2)
    try:
        stack = _pids(lab, i, lambda c, a, p: c.startswith(("corosync", "pacemaker")))
        _kill(stack)
        t_kill = time.monotonic()
        elsewhere = _await(lambda: [vm for vm in vms
                                    if set(soak.qemus().get(vm, {})) - {i}], 90, 0.5)
        time.sleep(hold)
        twice = [vm for vm in vms if len(soak.qemus().get(vm, {})) > 1]
        soak.oracles_before(i)
        lab.crash(i)
    finally:
        lab.run(first, ["crm_attribute", "-t", "crm_config", "-n", "stonith-enabled", "-v",
                        "true"], timeout=30, check=False)
    lab.start_node(i, fence_timeout=5)
    soak.oracles_after(i)
    return {"node": lab.node_name(i), "vms": vms, "killed": len(stack),
            "started_elsewhere_s": round(time.monotonic() - t_kill, 1) if elsewhere else None,
            "running_twice": twice}


CANARY = {"unfenced-stack-kill": f_unfenced_stack_kill}
# RBDVirtualDomain plays it too: the same fault, the agent refusing the second start
FAULTS.update(CANARY)


def use_agent(lab, cfg, agent):
    """Switch every VM's primitive to ocf:heartbeat:VirtualDomain (agent "virtualdomain")
    or back to ocf:vmceph:RBDVirtualDomain ("rbd") in place: same id, constraints, meta
    attributes and operations. The RBDVirtualDomain primitives are saved in the lab's
    state dir on the way to VirtualDomain and put back as they were."""
    import xml.etree.ElementTree as ET
    i = lab.first_alive()
    saved_path = lab.path("chaos-rbd-primitives.json")
    try:
        with open(saved_path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        saved = {}
    try:   # what configure() pushed (vmlab/cluster_config.py), if nothing was saved
        pushed = ET.parse(lab.path("cib", "pushed.xml")).getroot()
        for vm in cfg.vms:
            prim = pushed.find(f".//primitive[@id='{vm}']")
            if prim is not None and vm not in saved:
                saved[vm] = ET.tostring(prim, encoding="unicode")
    except (OSError, ET.ParseError):
        pass
    changed = False
    for vm in sorted(cfg.vms):
        xml = lab.run(i, ["cibadmin", "-Q", "--xpath", f"//primitive[@id='{vm}']"],
                      timeout=30).stdout
        prim = ET.fromstring(xml)
        if agent == "rbd":
            if prim.get("type") == "RBDVirtualDomain" or vm not in saved:
                continue
            text = saved[vm]
        else:
            if prim.get("type") == "VirtualDomain":
                continue
            saved[vm] = xml
            prim.set("provider", "heartbeat")
            prim.set("type", "VirtualDomain")
            params = {"config": cfg.configs[vm], "hypervisor": "qemu:///system",
                      "force_stop": "true", "migration_transport": "tcp",
                      # its start would set host_memory, a capacity no lab node offers
                      # (placement-strategy=balanced would then place the VM nowhere)
                      "autoset_utilization_host_memory": "false"}
            util = prim.find("utilization")
            for nv in list(util if util is not None else []):
                if nv.get("name") not in ("cpu", "hv_memory"):
                    util.remove(nv)
            ia = prim.find("instance_attributes")
            for nv in list(ia):
                ia.remove(nv)
            for k, v in params.items():
                ET.SubElement(ia, "nvpair", {"id": f"{vm}-instance_attributes-{k}",
                                             "name": k, "value": v})
            text = ET.tostring(prim, encoding="unicode")
        with open(saved_path, "w") as f:
            json.dump(saved, f)
        lab.run(i, ["cibadmin", "--replace", "-o", "resources", "--xml-text", text],
                timeout=60)
        changed = True
    if changed:
        lab.run(i, ["crm_resource", "--cleanup"], timeout=60, check=False)
        cluster_config.wait_settled(lab, cfg, timeout=180)


def run_canary(lab, cfg, seed, checker=None, log=print, agent="virtualdomain"):
    """The canary: the VMs under `agent`, one unfenced-stack-kill. Returns run_soak's
    result; with VirtualDomain both oracles must have fired."""
    if agent == "virtualdomain":
        use_agent(lab, cfg, "virtualdomain")
    return run_soak(lab, cfg, seed, 1, list(CANARY), checker=checker, log=log,
                    agent=agent)


# ---------------------------------------------------------------------- the report
NODE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
MARK_BEGIN, MARK_END = "<!-- chaos-soak:begin -->", "<!-- chaos-soak:end -->"


def _esc(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def timeline_svg(result, title="fault soak"):
    """Each VM's writes over time (a tick per write, coloured by the node that made it;
    red below the row: failed or timed out), each fault a dashed line with its number."""
    t0, t1 = result["t0"], result["t_end"]
    span = max(1.0, t1 - t0)
    vms, nodes = result["vms"], result["nodes"]
    left, top, row, width = 70, 40, 46, 1100
    plot_w = width - left - 20
    rows_h = row * len(vms)
    legend_y = top + rows_h + 40
    faults = result["records"]
    height = legend_y + 18 * (len(nodes) // 4 + 2) + 16 * ((len(faults) + 2) // 3) + 20

    def x(t):
        return left + (t - t0) / span * plot_w
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">{_esc(title)}: seed {result["seed"]}, '
           f'{len(faults)} faults, {span / 60:.1f} min; a tick per write, coloured by node; '
           f'red below: failed or timed out</text>']
    for k, vm in enumerate(vms):
        y = top + k * row
        out.append(f'<text x="5" y="{y + 20}">{_esc(vm)}</text>')
        out.append(f'<line x1="{left}" y1="{y + 30}" x2="{left + plot_w}" y2="{y + 30}" '
                   f'stroke="#ccc"/>')
    colour = {n: NODE_COLOURS[k % len(NODE_COLOURS)] for k, n in enumerate(nodes)}
    for w in result["writes"]:
        if w.vm not in vms:
            continue
        y = top + vms.index(w.vm) * row
        if w.ok:
            out.append(f'<rect x="{x(w.t1):.1f}" y="{y + 8}" width="1.2" height="20" '
                       f'fill="{colour.get(w.node, "#000")}"/>')
        else:
            out.append(f'<rect x="{x(w.t0):.1f}" y="{y + 31}" width="1.5" height="8" '
                       f'fill="#d62728"/>')
    for n, rec in enumerate(faults, 1):
        fx = x(rec["t_abs"])
        fe = x(rec["t_end_abs"])
        out.append(f'<rect x="{fx:.1f}" y="{top - 4}" width="{max(1.0, fe - fx):.1f}" '
                   f'height="{rows_h + 4}" fill="#000" fill-opacity="0.04"/>')
        out.append(f'<line x1="{fx:.1f}" y1="{top - 6}" x2="{fx:.1f}" y2="{top + rows_h}" '
                   f'stroke="#000" stroke-dasharray="3,3"/>')
        out.append(f'<text x="{fx + 2:.1f}" y="{top - 8}">{n}</text>')
    axis_y = top + rows_h + 14
    for k in range(0, int(span) + 1, max(60, int(span / 10) // 60 * 60 or 60)):
        out.append(f'<text x="{x(t0 + k):.1f}" y="{axis_y}">{k // 60} min</text>')
    lx = left
    for n in nodes:
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" '
                   f'fill="{colour[n]}"/><text x="{lx + 14}" y="{legend_y}">{_esc(n)}</text>')
        lx += 90
    out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" fill="#d62728"/>'
               f'<text x="{lx + 14}" y="{legend_y}">write failed / timed out</text>')
    for n, rec in enumerate(faults, 1):
        col, line = (n - 1) % 3, (n - 1) // 3
        mark = "" if rec["survived"] else (" (unsafe)" if not rec["safe"] else " (operator)")
        out.append(f'<text x="{left + col * 340}" y="{legend_y + 20 + 16 * line}">'
                   f'{n}: {_esc(rec["kind"])} {_esc(_victim(rec))}{mark}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _victim(rec):
    d = rec.get("detail") or {}
    for key in ("node", "vm", "nodes", "how"):
        if key in d:
            v = d[key]
            return ",".join(v) if isinstance(v, list) else str(v)
    return ""


def _fmt(v):
    return "-" if v is None else f"{v:g}"


def report_section(result, svg_name, canary=None, command=None, missing=()):
    s = summarize(result["records"])
    recs = result["records"]
    o = result["oracles"]
    wo = o.get("write oracle", {})
    wc = o.get("watcher checker", {})
    # fewer faults than planned: the time limit, or a SIGTERM/SIGINT (Soak.request_stop)
    why = result.get("stopped") or "the run's time limit came first"
    cut_short = (f" (of {result['faults']} planned: {why})"
                 if len(recs) < result.get("faults", len(recs)) else "")
    lines = [MARK_BEGIN,
             "## Fault soak (generated by `python3 -m vmlab chaos`)",
             "",
             f"Seeded run: seed **{result['seed']}**, {len(recs)} faults"
             + cut_short + " "
             f"({', '.join(sorted(s))}), agent {result['agent']}, "
             f"{(result['t_end'] - result['t0']) / 60:.1f} min on the three-node lab "
             f"(tests/vmlab/chaos.py). Replay: `{command or ''}`.",
             "",
             "After each fault the harness heals it (a crashed or fenced node boots again), "
             "waits at most "
             f"{SETTLE_S} s until every node is online, Ceph healthy, every VM placed once "
             "with exactly one QEMU and no action running, then asks both oracles. "
             "\"Survived\" = no violation by either oracle, every VM running exactly once, "
             "and no operator action was needed. \"Writing again\" = from the fault to the "
             "first prompt acknowledged write after the last failed or stalled "
             f"(> {SLOW_WRITE_S:g} s) write of every VM; \"gap\" = the longest time one VM "
             "had no write acknowledged.",
             "",
             "| fault | n | survived | operator action | writing again median / worst (s) "
             "| worst gap (s) | watcher checker | write oracle |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in sorted(s):
        k = s[kind]
        gaps = [max(r["gap_s"].values()) for r in recs if r["kind"] == kind and r["gap_s"]]
        lines.append(f"| {kind} | {k['count']} | {k['survived']} | {k['operator']} | "
                     f"{_fmt(k['median_s'])} / {_fmt(k['worst_s'])} | "
                     f"{_fmt(max(gaps) if gaps else None)} | "
                     f"{k['violations'].get('watcher checker', 0)} | "
                     f"{k['violations'].get('write oracle', 0)} |")
    total = {name: sum(k["violations"].get(name, 0) for k in s.values())
             for name in ("watcher checker", "write oracle")}
    kinds = {}
    for r in recs:
        for name, vs in r["violations"].items():
            for v in vs:
                key = f"{name}: {v.split(' ', 1)[0].rstrip(':')}"
                kinds[key] = kinds.get(key, 0) + 1
    lines += ["",
              "Violations by what they say: " + (", ".join(
                  f"{k} {n}" for k, n in sorted(kinds.items())) or "none") + " (two-writers, "
              "both-running, late-write, overwrote-newer, two-owners-acked: a second "
              "writer; lost: a VM ran nowhere for 45 s; coverage: the watcher checker "
              "itself took no sample for over 2 s while Ceph answered).",
              "",
              f"Violations: watcher checker **{total['watcher checker']}**, write oracle "
              f"**{total['write oracle']}**. Acknowledged writes lost: "
              f"**{wo.get('lost_acked', '-')}** of {wo.get('acknowledged', '-')} acknowledged "
              f"({wo.get('failed', '-')} failed, {wo.get('timeouts', '-')} timed out, "
              f"{wo.get('unverified', '-')} unverified; images not read: "
              f"{wo.get('read_errors') or 'none'}). Watcher checker: {wc.get('samples', '-')} "
              f"samples, {wc.get('migration_overlaps', '-')} excused overlaps.",
              ""]
    bad = [(n, r) for n, r in enumerate(recs, 1) if not r["survived"]]
    if bad:
        lines.append("Faults not survived:")
        lines.append("")
        for n, r in bad:
            why = []
            for name, vs in r["violations"].items():
                why += [f"{name}: {v}" for v in vs[:3]]
            why += r["not_once"]
            for a in r.get("operator") or []:
                why.append(f"operator cleanup of {', '.join(a['cleanup'])} (starts refused: "
                           f"{'; '.join(x.split('returned', 1)[-1][:160] for x in a['failed'][:1])}"
                           f"; blocklisted + unlocked {a['unlocked'] or 'nothing'})")
            if r.get("error"):
                why.append(r["error"])
            lines.append(f"- {n}. {r['kind']} {_victim(r)} at {r['t']:.0f} s: "
                         + "; ".join(why)[:900])
        lines.append("")
    left = [(n, r) for n, r in enumerate(recs, 1) if r.get("fail_counts")]
    lines += ["Fail counts Pacemaker kept after a fault (each bans a VM from a node until "
              "failure-timeout): " + ("; ".join(
                  f"after {n}. {r['kind']}: {', '.join(r['fail_counts'])}"
                  for n, r in left[:20]) + ("; ..." if len(left) > 20 else "")
                  if left else "none") + ".", ""]
    if missing:
        lines += ["Fault kinds of issue 11 not in this soak: " + ", ".join(missing) + ".", ""]
    lines += [f"![timeline of the soak]({svg_name})", ""]
    if canary is not None:
        cs = canary["records"][0] if canary["records"] else {}
        cv = cs.get("violations", {})
        lines += ["### Canary: ocf:heartbeat:VirtualDomain under the same harness",
                  "",
                  f"Fault `unfenced-stack-kill` (seed {canary['seed']}): fencing disabled, "
                  "corosync and Pacemaker of a node running a VM SIGKILLed; its QEMU keeps "
                  "writing and the majority starts the VM again elsewhere. Detail: "
                  f"{cs.get('detail')}.",
                  "",
                  f"- watcher checker: **{len(cv.get('watcher checker', []))}** violations"
                  + (f" (first: `{cv['watcher checker'][0][:200]}`)"
                     if cv.get("watcher checker") else ""),
                  f"- write oracle: **{len(cv.get('write oracle', []))}** violations"
                  + (f" (first: `{cv['write oracle'][0][:200]}`)"
                     if cv.get("write oracle") else ""),
                  "",
                  "The canary passes when both numbers are above 0: each oracle can see a "
                  "second writer the lab really produced.", ""]
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def write_report(path, section):
    """Replace the section between the markers in path (append it if absent)."""
    from .util import replace_marked
    replace_marked(path, MARK_BEGIN, MARK_END, section)


# ---------------------------------------------------------------------- command line
def replay_command(seed, faults, kinds, agent, canary):
    cmd = f"python3 -m vmlab chaos --seed {seed} --faults {faults}"
    if agent != "rbd":
        cmd += f" --agent {agent}"
    if sorted(kinds) != sorted(FAULTS):
        cmd += f" --kinds {','.join(kinds)}"
    if canary:
        cmd += " --canary"
    return "cd tests && " + cmd


def run_cli(name, seed, faults, agent="rbd", kinds=None, report=None, keep=False,
            attach=False, canary=False, state_root=None, max_minutes=None):
    """`python3 -m vmlab chaos`: lab up + configure (or attach to one that is), the soak,
    the canary after it if asked, the report; the lab goes down unless keep/attach."""
    from .lab import Lab
    from .owner import owning
    kinds = kinds or (list(CANARY) if agent == "virtualdomain" else list(FAULTS))
    kwargs = {"state_root": state_root} if state_root else {}
    if attach:
        lab = Lab.attach(name, verbose=False, **kwargs)
        cfg = cluster_config.ClusterConfig.load(lab)
        return _cli_play(lab, cfg, seed, faults, agent, kinds, report, canary, max_minutes)
    lab = Lab(name=name, nodes=3, pacemaker=True, node_prefix="node", token_ms=1000,
              ceph_conf_extra={"mon lease": 2}, verbose=False, **kwargs)
    with owning(lab):
        lab.down()
        try:
            t0 = time.monotonic()
            lab.up()
            cfg = cluster_config.configure(lab)
            print(f"lab {name} up and configured in {time.monotonic() - t0:.0f} s", flush=True)
            return _cli_play(lab, cfg, seed, faults, agent, kinds, report, canary,
                             max_minutes)
        finally:
            if not keep:
                lab.down()


def _cli_play(lab, cfg, seed, faults, agent, kinds, report, canary, max_minutes=None):
    def log(msg):
        print(msg, flush=True)
    if agent == "virtualdomain":
        result = run_canary(lab, cfg, seed, log=log)
        rec = result["records"][0] if result["records"] else {}
        fired = {k: len(v) for k, v in rec.get("violations", {}).items()}
        print(f"canary (VirtualDomain): violations {fired}")
        return 0 if fired and all(fired.values()) else 1
    use_agent(lab, cfg, "rbd")   # a lab a canary left under VirtualDomain
    result = run_soak(lab, cfg, seed, faults, kinds, log=log, max_minutes=max_minutes)
    can = None
    if canary:
        can = run_canary(lab, cfg, seed, log=log)
    summary = summarize(result["records"])
    for kind, k in sorted(summary.items()):
        print(f"  {kind:22} {k['count']:3} faults, {k['survived']:3} survived, "
              f"writing again median {_fmt(k['median_s'])} s worst {_fmt(k['worst_s'])} s, "
              f"violations {k['violations']}")
    print(f"oracles: {result['oracles']}")
    if report:
        svg = os.path.join(os.path.dirname(os.path.abspath(report)), "chaos-timeline.svg")
        with open(svg, "w") as f:
            f.write(timeline_svg(result))
        missing = [k for k in ISSUE_KINDS if k not in result["kinds"]]
        write_report(report, report_section(
            result, os.path.basename(svg), can,
            replay_command(seed, faults, result["kinds"], agent, canary), missing))
        print(f"report: {report}, timeline: {svg}")
    unsafe = [r for r in result["records"] if not r["safe"]]
    return 1 if unsafe else 0


# the kinds issue 11 asks for, by our names (a kind absent from a run is listed in its report)
ISSUE_KINDS = ["crash", "partition", "corosync-partition", "storage-partition",
               "libvirtd-restart", "qemu-kill", "mon-stop", "quorum-loss", "osd-kill",
               "migration-interrupted", "agent-kill-start", "agent-kill-migrate",
               "move-storm"]
