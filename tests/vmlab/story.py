"""The scenarios of the three-node lab, as steps that measure what they do: shared by the
demo (`python3 -m vmlab demo`, which prints them as a timeline) and the end-to-end tests
(tests/e2e, which assert on what they return).

Each step acts the way an operator or a failure would (crm, lab.crash, lab.partition),
then watches the cluster from outside: `crm_mon`/`crm_resource` and `virsh` inside the
nodes, the agents' own log lines in each node's pacemaker.log, and the invariant checker
(invariants.py) that samples every guarded image all along.
"""

import json
import os
import re
import time
import xml.etree.ElementTree as ET

from . import cluster_config
from .util import LabError, wait_until

AGENT_TAG = "RBDVirtualDomain("


class LogCursor:
    """New lines of every node's pacemaker.log since mark() (read from the host: the
    logs live in the state dir, also while a node is down)."""

    def __init__(self, lab):
        self.lab = lab
        self.offsets = {}

    def path(self, i):
        return self.lab.node_dir(i, "log-pacemaker", "pacemaker.log")

    def mark(self):
        for i in _every_node(self.lab):
            try:
                self.offsets[i] = os.path.getsize(self.path(i))
            except OSError:
                self.offsets[i] = 0
        return self

    def lines(self, i, agent_only=True):
        try:
            with open(self.path(i), errors="replace") as f:
                f.seek(self.offsets.get(i, 0))
                text = f.read()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            # the agent's own lines (HA_LOGFILE); pacemaker-execd repeats them as
            # "... error output [ ... ]": skip those copies
            if agent_only and (AGENT_TAG not in line or "pacemaker-" in line):
                continue
            out.append(line)
        return out

    def grep(self, pattern, nodes=None):
        """[(node index, line)] of agent lines matching the regex, on the given nodes."""
        rx = re.compile(pattern)
        return [(i, line) for i in (nodes or _every_node(self.lab)) for line in self.lines(i)
                if rx.search(line)]


def _every_node(lab):
    """Full nodes, then the pacemaker_remote ones (vmlab up --remotes)."""
    return getattr(lab, "all_indexes", lab.indexes)


def short(line):
    """'Nov 26 01:34:13 node3 RBDVirtualDomain(vm2)[10076]: WARNING: text' -> 'node3: text'"""
    m = re.match(r"\w+ +\d+ [\d:]+ (\S+) \S+: \w+: (.*)", line)
    return f"{m.group(1)}: {m.group(2)}" if m else line


class Story:
    def __init__(self, lab, cfg, checker, say=print):
        self.lab, self.cfg, self.checker, self.say = lab, cfg, checker, say
        self.logs = LogCursor(lab)

    # ------------------------------------------------------------------ looking
    def where(self, node=None):
        """{vm: [nodes Pacemaker runs it on]}."""
        where = cluster_config.placement(self.lab, node)
        return {vm: where.get(vm, []) for vm in self.cfg.vms}

    def index(self, name):
        return next(i for i in _every_node(self.lab) if self.lab.node_name(i) == name)

    def domstate(self, i, vm):
        out = self.lab.run(i, ["virsh", "-c", "qemu:///system", "domstate", vm], timeout=15,
                           check=False)
        return out.stdout.strip() if out.returncode == 0 else "absent"

    def node_states(self, node=None):
        """{node: (online, unclean)} from crm_mon."""
        root = cluster_config.crm_mon_xml(self.lab, node)
        return {n.get("name"): (n.get("online") == "true", n.get("unclean") == "true")
                for n in root.iterfind("nodes/node")}

    def vmceph_check(self, i, vm):
        """`vmceph check CONFIG --json` inside node i (the agent's own facts and decision)."""
        lib = os.path.join(self.lab.project_root, "lib")
        p = self.lab.run(i, ["/usr/bin/python3", "-m", "vmceph", "check", self.cfg.configs[vm],
                             "--ceph-user", self.lab.ceph_user, "--json"],
                         env={"PYTHONPATH": lib}, timeout=90, check=False)
        if p.returncode not in (0, 1):
            raise LabError(f"vmceph check {vm} on {self.lab.node_name(i)}: {p.stderr}")
        return json.loads(p.stdout)

    def writers(self, report):
        """[(image, node, client, address)] from a vmceph check report."""
        return [(img["image"], w.get("node"), w["entity"], w["addr"])
                for img in report["images"] for w in img["watchers"]]

    # ------------------------------------------------------------------ 1. VMs run
    def vms_running(self):
        t0 = time.monotonic()
        cluster_config.wait_settled(self.lab, self.cfg, timeout=120)
        where = {vm: nodes[0] for vm, nodes in self.where().items()}
        writes = {vm: self.lab.guest_write(self.index(node), vm) for vm, node in where.items()}
        checker_node = self.lab.first_alive()
        table = []
        decisions = {}
        for vm in self.cfg.vms:
            report = self.vmceph_check(checker_node, vm)
            decisions[vm] = report["decision"]
            table += self.writers(report)
        return {"placement": where, "first_write_s": writes, "writers": table,
                "checked_on": self.lab.node_name(checker_node), "decisions": decisions,
                "took_s": time.monotonic() - t0}

    # ------------------------------------------------------------------ 2. live migration
    def live_migrate(self, vm, target, timeout=60):
        """`crm resource move VM TARGET`, then the move constraint is cleared again (it would
        otherwise pull the VM back whenever the target rejoins after a failure)."""
        source = self.where()[vm][0]
        src_i, dst_i = self.index(source), self.index(target)
        self.logs.mark()
        mark = len(self.checker.violations)
        qemu_seen_always = True
        t0 = time.monotonic()
        self.lab.run(src_i, ["crm", "resource", "move", vm, target], timeout=60)
        while True:
            if not self.checker.qemu_nodes(vm):
                qemu_seen_always = False
            if self.where()[vm] == [target] and self.domstate(src_i, vm) == "absent":
                break
            if time.monotonic() - t0 > timeout:
                raise LabError(f"{vm} did not move to {target} within {timeout}s")
            time.sleep(0.2)
        took = time.monotonic() - t0
        self.lab.run(dst_i, ["crm", "resource", "clear", vm], timeout=60)
        stats = self.logs.grep(rf"migration of {vm} from {source}: took (\d+) ms, downtime "
                               rf"(\d+) ms", nodes=[dst_i])
        m = re.search(r"took (\d+) ms, downtime (\d+) ms", stats[-1][1]) if stats else None
        cold = self.logs.grep(rf"domain {vm} started", nodes=[dst_i])
        write_s = self.lab.guest_write(dst_i, vm)
        self.checker.wait_samples(2)
        return {"vm": vm, "source": source, "target": target, "took_s": took,
                "job_ms": int(m.group(1)) if m else None,
                "downtime_ms": int(m.group(2)) if m else None,
                "log": [short(line) for _, line in stats],
                "migrate_to_logged": bool(self.logs.grep(rf"live-migrating {vm} to {target}",
                                                         nodes=[src_i])),
                "cold_start_on_target": bool(cold), "qemu_always_present": qemu_seen_always,
                "first_write_after_s": write_s, "violations": self.checker.since(mark)}

    # ------------------------------------------------------------------ 3./5. failures
    def fence_completed(self, victim_i, since, node):
        """Epoch of the first successful fencing of victim_i at or after since, from the
        cluster's fencing history (1 s resolution), or None."""
        from .lab import _epoch
        out = self.lab.run(node, ["stonith_admin", "--history", self.lab.node_name(victim_i),
                                  "--verbose", "--output-as=xml"], timeout=20, check=False)
        try:
            events = ET.fromstring(out.stdout).iter("fence_event")
        except ET.ParseError:
            return None
        done = [_epoch(e.get("completed")) for e in events if e.get("status") == "success"]
        done = [t for t in done if t >= int(since)]
        return min(done) if done else None

    def _recovery(self, victim_i, vms, kind, timeout, t0, w0):
        """Poll until every vm runs (virsh: running) on a survivor and Pacemaker agrees.
        t0/w0: monotonic and wall-clock time of the failure."""
        victim = self.lab.node_name(victim_i)
        survivors = [i for i in _every_node(self.lab) if i != victim_i and self.lab.alive(i)]
        running, located, fenced, gone = {}, {}, None, None
        poll_on = survivors[0]
        while len(running) < len(vms) or len(located) < len(vms) or fenced is None \
                or gone is None:
            if time.monotonic() - t0 > timeout:
                raise LabError(f"{kind} of {victim}: not recovered within {timeout}s "
                               f"(running {running}, located {located}, fenced {fenced})")
            if len(running) < len(vms):
                for i in survivors:  # one virsh per node and poll: finer timing
                    out = self.lab.run(i, ["virsh", "-c", "qemu:///system", "list", "--name",
                                           "--state-running"], timeout=15, check=False)
                    for vm in set(out.stdout.split()) & set(vms) - set(running):
                        running[vm] = (self.lab.node_name(i), time.monotonic() - t0)
            # each look on its own: crm_mon may fail while a new DC is elected
            try:
                where = self.where(poll_on)
                for vm in vms:
                    if vm not in located and where[vm] and where[vm][0] != victim:
                        located[vm] = (where[vm][0], time.monotonic() - t0)
            except (LabError, ET.ParseError):
                pass
            try:
                if fenced is None:
                    done = self.fence_completed(victim_i, w0, poll_on)
                    if done is not None:
                        fenced = max(0.0, done - w0)
            except LabError:
                pass
            try:
                online, unclean = self.node_states(poll_on).get(victim, (True, True))
                if gone is None and not online and not unclean:
                    gone = time.monotonic() - t0
            except (LabError, ET.ParseError):
                pass
            time.sleep(0.25)
        return running, located, fenced, gone

    def _after_recovery(self, result, vms):
        nodes = {vm: self.index(result["running"][vm][0]) for vm in vms}
        result["first_write_s"] = {vm: self.lab.guest_write(i, vm) for vm, i in nodes.items()}
        survivors = sorted(set(nodes.values()))

        def lines(pattern):
            return [short(line) for _, line in self.logs.grep(pattern, survivors)]
        result["blocklisted"] = lines(r"WARNING: blocklisted ")
        result["locks_broken"] = lines(r"WARNING: broke the exclusive lock")
        result["retries"] = lines(r"not confirmed yet|not possible yet|cannot inspect .* yet"
                                      r"|looking again")
        result["start_failures"] = lines(r"ERROR|exit-reason")
        return result

    def settle(self, timeout=120):
        """Wait until the cluster runs no action: a failure that happens while one runs is
        acted on only once it has finished (a VM start waiting for Ceph, say), which would
        be measured as failover time."""
        self.lab.run(self.lab.first_alive(), ["crm_resource", "--wait", "-T", f"{timeout}s"],
                     timeout=timeout + 30)

    def crash(self, victim_i, timeout=120):
        """Power a node off; its VMs must run on a survivor after fencing and recovery."""
        self.settle()
        vms = [vm for vm, nodes in self.where().items()
               if self.lab.node_name(victim_i) in nodes]
        self.checker.move_off(victim_i)
        self.logs.mark()
        mark = len(self.checker.violations)
        t0, w0 = time.monotonic(), time.time()
        self.lab.crash(victim_i)
        running, located, fenced, gone = self._recovery(victim_i, vms, "crash", timeout, t0, w0)
        result = {"victim": self.lab.node_name(victim_i), "vms": vms, "running": running,
                  "located": located, "fenced_s": fenced, "gone_s": gone,
                  "failover_s": max(t for _, t in running.values()) if running else None}
        self._after_recovery(result, vms)
        self.checker.wait_samples(2)
        result["violations"] = self.checker.since(mark)
        return result

    def partition(self, victim_i, timeout=150):
        """Pull a node's cable: the majority must fence it and recover its VMs."""
        self.settle()
        vms = [vm for vm, nodes in self.where().items()
               if self.lab.node_name(victim_i) in nodes]
        self.checker.move_off(victim_i)
        self.logs.mark()
        mark = len(self.checker.violations)
        t0, w0 = time.monotonic(), time.time()
        self.lab.partition(victim_i)
        running, located, fenced, gone = self._recovery(victim_i, vms, "partition", timeout,
                                                        t0, w0)
        result = {"victim": self.lab.node_name(victim_i), "vms": vms, "running": running,
                  "located": located, "fenced_s": fenced, "gone_s": gone,
                  "powered_off": not self.lab.alive(victim_i),
                  "failover_s": max(t for _, t in running.values()) if running else None}
        self._after_recovery(result, vms)
        self.checker.wait_samples(2)
        result["violations"] = self.checker.since(mark)
        return result

    # ------------------------------------------------------------------ 4./6. rejoin
    def rejoin(self, i, heal=False):
        t0 = time.monotonic()
        if heal:
            self.lab.heal(i)
        self.lab.start_node(i)
        booted = time.monotonic() - t0
        self.lab.wait_ceph_healthy(timeout=180)
        healthy = time.monotonic() - t0
        self.lab.wait_pacemaker_online(self.lab.nodes, timeout=120)
        online = time.monotonic() - t0
        name = self.lab.node_name(i)
        wait_until(lambda: cluster_config.health(self.lab).get(name) == "green", timeout=90,
                   interval=0.5, what=f"#health-ceph green on {name}")
        green = time.monotonic() - t0
        self.checker.allow(i)
        return {"node": name, "booted_s": booted, "health_ok_s": healthy,
                "online_s": online, "green_s": green, "where": self.where()}

    # ------------------------------------------------------------------ refusals
    def agent(self, i, rsc, action, meta=None, timeout_ms=120000):
        """Run ocf:vmceph:<agent> ACTION for resource rsc inside node i exactly as
        pacemaker-execd would: its instance attributes from the live CIB as OCF_RESKEY_*,
        the CRM_meta_* variables, the cluster's own tools for the facts. Returns
        (rc, exit reason, stderr)."""
        xml = self.lab.run(i, ["cibadmin", "-Q", "--xpath", f"//primitive[@id='{rsc}']"],
                           timeout=30).stdout
        prim = ET.fromstring(xml)
        env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": rsc,
               "OCF_RESOURCE_TYPE": prim.get("type"), "OCF_RESOURCE_PROVIDER": prim.get("provider"),
               "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
               "OCF_RESKEY_CRM_meta_on_node": self.lab.node_name(i)}
        for nv in prim.iterfind("instance_attributes/nvpair"):
            env["OCF_RESKEY_" + nv.get("name")] = nv.get("value")
        for k, v in (meta or {}).items():
            env["OCF_RESKEY_CRM_meta_" + k] = v
        path = f"/usr/lib/ocf/resource.d/{prim.get('provider')}/{prim.get('type')}"
        p = self.lab.run(i, [path, action], env=env, timeout=timeout_ms / 1000 + 30, check=False)
        reasons = [line.split(":", 1)[1] for line in p.stderr.splitlines()
                   if line.startswith("ocf-exit-reason:")]
        return p.returncode, (reasons[-1] if reasons else ""), p.stderr

    def set_target_role(self, vm, role, timeout=60):
        self.lab.run(self.lab.first_alive(), ["crm_resource", "-r", vm, "--meta", "-p",
                                              "target-role", "-v", role], timeout=30)
        want = role == "Started"
        wait_until(lambda: bool(self.where()[vm]) == want, timeout=timeout, interval=0.5,
                   what=f"{vm} {role.lower()}")

    def failures(self, node=None):
        """[(resource, op, node, exit reason)] of crm_mon's failed actions."""
        root = cluster_config.crm_mon_xml(self.lab, node)
        return [(f.get("op_key", "").rsplit("_", 2)[0], f.get("task"), f.get("node"),
                 f.get("exitreason", "")) for f in root.iter("failure")]

    def refused_start(self, vm, writer_i, timeout=60):
        """vm is started by hand with virsh on node writer_i, behind Pacemaker's back, and
        writes; Pacemaker (kept off writer_i by a ban) must then fail to start it anywhere
        else: every start is refused with the image, node, client and address named."""
        mark = len(self.checker.violations)
        writer = self.lab.node_name(writer_i)
        self.logs.mark()
        self.checker.expect_down(vm)
        self.set_target_role(vm, "Stopped")
        first = self.lab.first_alive()
        self.lab.run(first, ["crm_resource", "--ban", "-r", vm, "-N", writer], timeout=30)
        self.lab.virsh(writer_i, "create", self.cfg.configs[vm])
        self.lab.guest_write(writer_i, vm)
        clients = self.lab.image_clients(self.cfg.vms[vm][0])
        t0 = time.monotonic()
        self.lab.run(first, ["crm_resource", "-r", vm, "--meta", "-p", "target-role", "-v",
                             "Started"], timeout=30)
        others = [self.lab.node_name(i) for i in self.lab.indexes
                  if i != writer_i and self.lab.alive(i)]

        def refused_everywhere():
            failed = {n for r, op, n, _ in self.failures() if r == vm and op == "start"}
            return failed >= set(others)
        wait_until(refused_everywhere, timeout=timeout, interval=0.5,
                   what=f"{vm}'s start refused on {', '.join(others)}")
        took = time.monotonic() - t0
        reasons = {n: why for r, op, n, why in self.failures() if r == vm and op == "start"}
        running = {self.lab.node_name(i): self.domstate(i, vm) for i in self.lab.indexes
                   if self.lab.alive(i)}
        result = {"vm": vm, "writer": writer, "clients": clients, "reasons": reasons,
                  "domstate": running, "where": self.where()[vm], "took_s": took,
                  "qemu_nodes": [self.lab.node_name(i) for i in self.checker.qemu_nodes(vm)],
                  "log": [short(line) for _, line in
                          self.logs.grep(rf"start decision for {vm}: refuse")]}
        # back to normal: the hand-made domain goes, Pacemaker starts vm where it likes
        self.lab.virsh(writer_i, "destroy", vm)
        self.lab.run(first, ["crm_resource", "--clear", "-r", vm], timeout=30)
        self.lab.run(first, ["crm_resource", "--cleanup", "-r", vm], timeout=60)
        wait_until(lambda: len(self.where()[vm]) == 1, timeout=90, interval=0.5,
                   what=f"{vm} started again")
        self.checker.expect_down(vm, False)
        result["restarted_on"] = self.where()[vm]
        result["violations"] = self.checker.since(mark)
        return result

    def migrate_to_red_target(self, vm, target_i):
        """The target's #health-ceph is red (CephHealth stopped there by a ban, then the
        attribute set by hand); migrate_to, run on the VM's node as Pacemaker runs it, must
        refuse, and the VM keep running where it was. Pacemaker itself never picks a red
        target (migrate-on-red and the -INFINITY rule), so the agent is asked directly."""
        target = self.lab.node_name(target_i)
        first = [i for i in self.lab.indexes if i != target_i and self.lab.alive(i)][0]
        self.lab.run(first, ["crm_resource", "--ban", "-r", "ceph-health-clone", "-N", target],
                     timeout=30)
        try:
            wait_until(lambda: target not in cluster_config.placement(self.lab, first).get(
                "ceph-health", []), timeout=60, interval=0.5,
                what=f"CephHealth stopped on {target}")
            self.lab.run(first, ["attrd_updater", "-N", target, "-n", "#health-ceph", "-U",
                                 "red"], timeout=30)
            wait_until(lambda: cluster_config.attrd_values(self.lab, node=first).get(target)
                       == "red", timeout=30, interval=0.3, what=f"#health-ceph=red on {target}")
            # migrate-on-red empties the target first (live migrations): wait for it
            wait_until(lambda: all(target not in nodes for nodes in self.where(first).values()),
                       timeout=90, interval=0.5, what=f"{target} emptied")
            source = self.where(first)[vm][0]
            src_i = self.index(source)
            rc, reason, err = self.agent(src_i, vm, "migrate_to",
                                         meta={"migrate_source": source,
                                               "migrate_target": target})
            return {"vm": vm, "source": source, "target": target, "rc": rc, "reason": reason,
                    "state_on_source": self.domstate(src_i, vm),
                    "state_on_target": self.domstate(target_i, vm),
                    "where": self.where(first)[vm]}
        finally:
            self.lab.run(first, ["attrd_updater", "-N", target, "-n", "#health-ceph", "-D"],
                         timeout=30, check=False)
            self.lab.run(first, ["crm_resource", "--clear", "-r", "ceph-health-clone"],
                         timeout=30, check=False)
            wait_until(lambda: cluster_config.health(self.lab, first).get(target) == "green",
                       timeout=90, interval=0.5, what=f"#health-ceph green on {target} again")
