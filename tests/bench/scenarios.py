"""What the benchmark measures, on the lab, for both agents.

Every figure is taken for ``ocf:vmceph:RBDVirtualDomain`` ("vmceph") and
``ocf:heartbeat:VirtualDomain`` ("VirtualDomain") in the same run, on the same domains,
back to back in pairs: pair i = (vmceph run i, VirtualDomain run i), with the order inside a
pair alternating (A B, B A, A B, ...) so that neither agent always runs first (after the
other's cache effects, or in the same direction of a migration).

Both agents get the same environment, as pacemaker-execd would give it to a resource of
either type with the same parameters: the domain's ``config``, ``hypervisor=qemu:///system``,
``force_stop=true`` (the OS-less guests ignore a shutdown request), ``migration_transport=tcp``,
the Ceph user and keyring (VirtualDomain ignores them), and ``autoset_utilization_*=false``
(the benchmark's resources are not in the CIB; with the defaults VirtualDomain would also run
``virsh dominfo`` three times and ``crm_resource`` on every monitor). Membership comes from
the lab's real Pacemaker (no ``membership`` parameter), in the recovery scenario too.
"""

import os
import re
import signal
import time

from bench import stats

OCF_ROOT = "/usr/lib/ocf"
OURS = "vmceph"
VD = "VirtualDomain"
OCF_SUCCESS, OCF_NOT_RUNNING = 0, 7

TIMEOUT_MS = {"monitor": 30000, "start": 90000, "stop": 90000, "migrate_to": 120000,
              "migrate_from": 60000}


class BenchError(RuntimeError):
    pass


class Agent:
    def __init__(self, label, rtype, provider):
        self.label = label
        self.type = rtype
        self.provider = provider
        self.path = "%s/resource.d/%s/%s" % (OCF_ROOT, provider, rtype)


AGENTS = {OURS: Agent(OURS, "RBDVirtualDomain", "vmceph"),
          VD: Agent(VD, "VirtualDomain", "heartbeat")}
CEPHHEALTH = Agent("CephHealth", "CephHealth", "vmceph")


class Plan:
    """How many repetitions of each figure."""

    def __init__(self, monitor=40, deep=20, probe=20, startstop=8, migrate=6, recovery=2,
                 cephhealth=20, disks=(1, 4, 16), curve=(1, 10, 25, 50), curve_rounds=3):
        self.monitor = monitor
        self.deep = deep
        self.probe = probe
        self.startstop = startstop
        self.migrate = migrate
        self.recovery = recovery
        self.cephhealth = cephhealth
        self.disks = tuple(disks)
        self.curve = tuple(sorted(curve))     # running VMs on one node: the monitor curve
        self.curve_rounds = curve_rounds

    @classmethod
    def quick(cls):
        return cls(monitor=6, deep=4, probe=4, startstop=2, migrate=1, recovery=1,
                   cephhealth=4, curve=(1, 5), curve_rounds=1)

    def describe(self):
        return ("%d monitor rounds, %d deep monitors per depth, %d probe pairs, %d start+stop "
                "pairs per disk count %s, %d migration pairs (%d migrations), %d recovery "
                "runs per agent, %d CephHealth monitors, %d monitor rounds per agent with "
                "%s VMs running on one node"
                % (self.monitor, self.deep, self.probe, self.startstop,
                   "/".join(map(str, self.disks)), self.migrate, 2 * self.migrate,
                   self.recovery, self.cephhealth, self.curve_rounds,
                   "/".join(map(str, self.curve))))


class Total:
    """Several runs as one figure: wall and CPU summed, the highest peak memory."""

    def __init__(self, ms):
        self.count = len(ms)
        self.wall = sum(m.wall for m in ms)
        self.cpu = sum(m.cpu for m in ms)
        self.maxrss_kib = max((m.maxrss_kib or 0) for m in ms) or None
        servers = [m.server_cpu for m in ms]
        self.server_cpu = None if None in servers else sum(servers)


class Domain:
    def __init__(self, name, images, config):
        self.name = name
        self.images = list(images)
        self.config = config


def curve_name(k):
    return "bm-c%02d" % k


FLOOR_LIBVIRT = ("import libvirt\n"
                 "conn = libvirt.open('qemu:///system')\n"
                 "conn.lookupByName(%r).state()\n")
DIST = "import sys\nsys.path.append('/usr/lib/python3/dist-packages')\n"


class Bench:
    """The lab-side work: setup, every scenario, and the measurements they produced."""

    def __init__(self, lab, runner, plan, log=print, only=None):
        self.lab = lab
        self.runner = runner
        self.plan = plan
        self.log = log
        self.only = only  # None = every section
        self.data = {}    # (scenario, who) -> [Measurement or number], in run order
        self.notes = {}   # free-form facts for the report
        self.skipped = []
        self.domains = {}
        self.shared = os.path.join(lab.state_dir, "bench")

    # ------------------------------------------------------------------ helpers
    def add(self, key, value):
        self.data.setdefault(key, []).append(value)

    def get(self, key):
        return self.data.get(key, [])

    def wanted(self, section):
        return self.only is None or section in self.only

    def env(self, agent, dom, node, action, interval_ms=0, depth=0, meta=None, extra=None):
        """The environment pacemaker-execd gives an OCF agent (Pacemaker 2.1)."""
        e = {"OCF_ROOT": OCF_ROOT, "OCF_RA_VERSION_MAJOR": "1", "OCF_RA_VERSION_MINOR": "1",
             "OCF_EXIT_REASON_PREFIX": "ocf-exit-reason:",
             "OCF_RESOURCE_INSTANCE": dom.name, "OCF_RESOURCE_TYPE": agent.type,
             "OCF_RESOURCE_PROVIDER": agent.provider,
             "OCF_RESKEY_CRM_meta_timeout": str(TIMEOUT_MS.get(action, 30000)),
             "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
             "OCF_RESKEY_CRM_meta_on_node": self.lab.node_name(node),
             "OCF_CHECK_LEVEL": str(depth),
             # execd passes the cluster's logging settings; the lab logs to files, not syslog
             "HA_LOGFACILITY": "none", "HA_debug": "0"}
        params = {"config": dom.config, "hypervisor": "qemu:///system", "force_stop": "true",
                  "migration_transport": "tcp", "autoset_utilization_cpu": "false",
                  "autoset_utilization_hv_memory": "false",
                  "autoset_utilization_host_memory": "false",
                  "ceph_user": self.lab.ceph_user,
                  "ceph_keyring": "/etc/ceph/ceph.client.%s.keyring" % self.lab.ceph_user}
        params.update(extra or {})
        for k, v in params.items():
            e["OCF_RESKEY_" + k] = str(v)
        for k, v in (meta or {}).items():
            e["OCF_RESKEY_CRM_meta_" + k] = str(v)
        return e

    def agent(self, who, dom, node, action, expect=(OCF_SUCCESS,), prefix=(), **kw):
        """Run one action of agent ``who`` on ``dom`` in ``node``; a Measurement."""
        agent = AGENTS[who] if isinstance(who, str) else who
        env = self.env(agent, dom, node, action, **kw)
        timeout = TIMEOUT_MS.get(action, 30000) / 1000.0 + 30
        m = self.runner.run(node, list(prefix) + [agent.path, action], env, timeout=timeout,
                            server_pid=self.lab.daemon_pid(node, "libvirtd"))
        if expect is not None and m.rc not in expect:
            raise BenchError("%s %s of %s on %s: rc %s (expected %s)%s\n%s"
                             % (agent.label, action, dom.name, self.lab.node_name(node), m.rc,
                                expect, " KILLED at the timeout" if m.killed else "",
                                m.stderr[-3000:]))
        return m

    def floor(self, node, code, site=True):
        argv = ["/usr/bin/python3"] + ([] if site else ["-S"]) + ["-c", code]
        m = self.runner.run(node, argv, timeout=60,
                            server_pid=self.lab.daemon_pid(node, "libvirtd"))
        if m.rc != 0:
            raise BenchError("floor %r failed: %s" % (code, m.stderr[-2000:]))
        return m

    def virsh(self, node, *args, check=True, timeout=60):
        return self.lab.run(node, ["virsh", "-c", "qemu:///system", *args], check=check,
                            timeout=timeout)

    def running_on(self, dom):
        return [i for i in self.lab.indexes if self.lab.alive(i) and dom.name in
                self.virsh(i, "list", "--name", check=False).stdout.split()]

    def destroy_everywhere(self, dom):
        for i in self.lab.indexes:
            self.virsh(i, "destroy", dom.name, check=False)
            self.lab.run(i, ["rm", "-f", "/run/resource-agents/vmceph-RBDVirtualDomain-%s.state"
                             % dom.name], check=False)

    def pairs(self, n):
        """(index, order) for n pairs, the order alternating between the agents."""
        for k in range(n):
            yield k, ((OURS, VD) if k % 2 == 0 else (VD, OURS))

    # ------------------------------------------------------------------ setup
    def setup(self):
        os.makedirs(self.shared, exist_ok=True)
        specs = {"bm-mon": 2, "bm-probe": 1, "bm-mig": 2, "bm-rec": 1}
        for n in self.plan.disks:
            specs["bm-ss%d" % n] = n
        if self.wanted("curve"):
            for k in range(1, max(self.plan.curve) + 1):
                specs[curve_name(k)] = 1
        images = []
        for name, n in specs.items():
            imgs = ["%s-d%d" % (name, k) for k in range(n)]
            images += imgs
            config = os.path.join(self.shared, name + ".xml")
            with open(config, "w") as f:
                f.write(self.lab.make_domain_xml(name, imgs))
            self.domains[name] = Domain(name, imgs, config)
        t0 = time.monotonic()
        code = ("import sys, rados, rbd\n"
                "c = rados.Rados(conffile='/etc/ceph/ceph.conf'); c.connect()\n"
                "io = c.open_ioctx(%r)\n"
                "for n in sys.argv[1:]:\n"
                "    try:\n"
                "        rbd.RBD().create(io, n, 64 << 20)\n"
                "    except rbd.ImageExists:\n"
                "        pass\n"
                "io.close(); c.shutdown()\n" % self.lab.pool)
        self.lab.run(1, ["/usr/bin/python3", "-c", code] + images, timeout=120)
        self.log("setup: %d RBD images created in %.1f s" % (len(images), time.monotonic() - t0))
        # CephHealth on every node, as the clone would run: it publishes #health-ceph (which
        # migrate_to checks on the target) and the nodes' Ceph client addresses (which start
        # uses to tell which node a watcher is on).
        ch = Domain("ceph-health", [], "")
        for i in self.lab.indexes:
            self.cephhealth(i, "start", ch)
        for i in self.lab.indexes:
            deadline = time.monotonic() + 30
            while True:
                p = self.lab.run(1, ["attrd_updater", "-n", "#health-ceph", "-Q", "-N",
                                     self.lab.node_name(i)], check=False, timeout=20)
                if 'value="green"' in p.stdout:
                    break
                if time.monotonic() > deadline:
                    raise BenchError("#health-ceph of %s not green: %s %s"
                                     % (self.lab.node_name(i), p.stdout, p.stderr))
                time.sleep(0.5)
        self.log("setup: CephHealth started on every node, #health-ceph green")

    def cephhealth(self, node, action, dom=None, interval_ms=0):
        dom = dom or Domain("ceph-health", [], "")
        env = {"OCF_ROOT": OCF_ROOT, "OCF_RA_VERSION_MAJOR": "1", "OCF_RA_VERSION_MINOR": "1",
               "OCF_EXIT_REASON_PREFIX": "ocf-exit-reason:",
               "OCF_RESOURCE_INSTANCE": "ceph-health:%d" % (node - 1),
               "OCF_RESOURCE_TYPE": "CephHealth", "OCF_RESOURCE_PROVIDER": "vmceph",
               "OCF_RESKEY_CRM_meta_timeout": "30000",
               "OCF_RESKEY_CRM_meta_interval": str(interval_ms),
               "OCF_RESKEY_CRM_meta_on_node": self.lab.node_name(node),
               "HA_LOGFACILITY": "none", "HA_debug": "0",
               "OCF_RESKEY_ceph_user": self.lab.ceph_user,
               "OCF_RESKEY_ceph_keyring": "/etc/ceph/ceph.client.%s.keyring" % self.lab.ceph_user}
        # No `pools` (PG check): with the caps the README gives client.vmceph (mgr 'profile
        # rbd pool=rbd') the manager refuses 'pg ls-by-pool' (EACCES) and every node is red.
        m = self.runner.run(node, [CEPHHEALTH.path, action], env, timeout=60)
        if m.rc != 0:
            raise BenchError("CephHealth %s on %s: rc %d\n%s"
                             % (action, self.lab.node_name(node), m.rc, m.stderr[-2000:]))
        return m

    # ------------------------------------------------------------------ scenarios
    def run_all(self):
        sections = [("monitor", self.bench_monitor), ("probe", self.bench_probe),
                    ("deep", self.bench_deep), ("cephhealth", self.bench_cephhealth),
                    ("startstop", self.bench_startstop), ("migrate", self.bench_migrate),
                    ("recovery", self.bench_recovery), ("curve", self.bench_curve)]
        for name, fn in sections:
            if not self.wanted(name):
                self.skipped.append(name)
                continue
            t0 = time.monotonic()
            fn()
            self.notes.setdefault("section_seconds", {})[name] = time.monotonic() - t0
            self.log("%s: done in %.1f s" % (name, time.monotonic() - t0))

    def bench_monitor(self):
        """Recurring monitor (depth 0) of a running domain, in rounds with the floors."""
        dom = self.domains["bm-mon"]
        self.agent(OURS, dom, 1, "start")     # as Pacemaker would: ours remembers it
        code = FLOOR_LIBVIRT % dom.name
        floors = [("floor: python3 -c pass", "pass", True),
                  ("floor: python3 -S -c pass", "pass", False),
                  ("floor: libvirt state query", code, True),
                  ("floor: libvirt state query, -S", DIST + code, False)]
        # warm-up (page cache, __pycache__), not counted
        for who in (OURS, VD):
            self.agent(who, dom, 1, "monitor", interval_ms=10000)
        for _, c, site in floors:
            self.floor(1, c, site)
        for k, order in self.pairs(self.plan.monitor):
            for who in order:
                self.add(("monitor", who),
                         self.agent(who, dom, 1, "monitor", interval_ms=10000))
            for label, c, site in (floors if k % 2 == 0 else floors[::-1]):
                self.add((label, None), self.floor(1, c, site))

    def bench_deep(self):
        dom = self.domains["bm-mon"]
        if not self.running_on(dom):
            self.agent(OURS, dom, 1, "start")
        for depth in (10, 20):
            self.agent(OURS, dom, 1, "monitor", interval_ms=10000, depth=depth)  # warm-up
        for k in range(self.plan.deep):
            for depth in ((10, 20) if k % 2 == 0 else (20, 10)):
                self.add(("monitor depth %d" % depth, OURS),
                         self.agent(OURS, dom, 1, "monitor", interval_ms=10000, depth=depth))

    def bench_probe(self):
        dom = self.domains["bm-probe"]
        for who in (OURS, VD):
            self.agent(who, dom, 1, "monitor", expect=(OCF_NOT_RUNNING,))  # warm-up
        for _, order in self.pairs(self.plan.probe):
            for who in order:
                self.add(("probe", who),
                         self.agent(who, dom, 1, "monitor", expect=(OCF_NOT_RUNNING,)))
        self.bench_cluster_probes()

    def bench_cluster_probes(self):
        """At cluster start Pacemaker probes every resource on every node: every domain of
        the benchmark as a resource, probed on every node, one probe after another (the
        runner measures one process at a time; Pacemaker runs them side by side, so this
        is the work, not the cluster's wall time). Measured per agent, in pairs."""
        doms = [self.domains[n] for n in sorted(self.domains)]
        nodes = [i for i in self.lab.indexes if self.lab.alive(i)]
        for _, order in self.pairs(max(1, self.plan.probe // 5)):
            for who in order:
                self.add(("cluster probes", who), Total(
                    [self.agent(who, d, i, "monitor", expect=(OCF_SUCCESS, OCF_NOT_RUNNING))
                     for i in nodes for d in doms]))
        self.notes["cluster_probes"] = (len(doms), len(nodes))

    def bench_curve(self):
        """Monitor CPU per node with N VMs running on it (issue 15: measured, not
        extrapolated from one VM): N one-disk domains run on node 1 (started by vmceph's
        agent, as Pacemaker would), and a round monitors each of them once with one agent,
        as the recurring monitors of one interval do; vmceph's and VirtualDomain's rounds
        alternate. A round's CPU (the agent processes, and libvirtd's share sampled
        around each of them) is the cost of one monitor interval of that node."""
        counts = self.plan.curve
        doms = [self.domains[curve_name(k)] for k in range(1, counts[-1] + 1)]
        running = 0
        try:
            for n in counts:
                t0 = time.monotonic()
                for dom in doms[running:n]:
                    self.agent(OURS, dom, 1, "start")
                running = n
                self.notes.setdefault("curve_start_s", {})[n] = time.monotonic() - t0
                for who in (OURS, VD):   # warm-up
                    self.agent(who, doms[n - 1], 1, "monitor", interval_ms=10000)
                for _, order in self.pairs(self.plan.curve_rounds):
                    for who in order:
                        self.add(("curve %d" % n, who), Total(
                            [self.agent(who, d, 1, "monitor", interval_ms=10000)
                             for d in doms[:n]]))
                self.log("curve: %d VMs running, %d rounds per agent" % (
                    n, self.plan.curve_rounds))
        finally:
            for dom in doms[:running]:
                self.agent(OURS, dom, 1, "stop", expect=None)

    def bench_cephhealth(self):
        self.cephhealth(1, "monitor", interval_ms=10000)  # warm-up
        for _ in range(self.plan.cephhealth):
            self.add(("CephHealth monitor", "CephHealth"),
                     self.cephhealth(1, "monitor", interval_ms=10000))

    def bench_startstop(self):
        # warm-up: the first QEMU start after boot probes more; not counted
        warm = self.domains["bm-ss%d" % self.plan.disks[0]]
        for who in (OURS, VD):
            self.agent(who, warm, 1, "start")
            self.agent(who, warm, 1, "stop")
        for n in self.plan.disks:
            dom = self.domains["bm-ss%d" % n]
            for _, order in self.pairs(self.plan.startstop):
                for who in order:
                    m1 = self.agent(who, dom, 1, "start")
                    m2 = self.agent(who, dom, 1, "stop")
                    if self.running_on(dom):
                        raise BenchError("%s stop left %s running" % (who, dom.name))
                    self.add(("start %d" % n, who), m1)
                    self.add(("stop %d" % n, who), m2)

    def domjobinfo_downtime(self, node, dom):
        p = self.virsh(node, "domjobinfo", "--completed", "--keep-completed", dom.name,
                       check=False)
        m = re.search(r"Total downtime:\s+(\d+)\s*ms", p.stdout)
        return (int(m.group(1)) / 1000.0) if m else None

    def bench_migrate(self):
        dom = self.domains["bm-mig"]
        self.agent(OURS, dom, 1, "start")
        self.lab.guest_write(1, dom.name, 0)
        here = 1
        for _, order in self.pairs(self.plan.migrate):
            for who in order:
                src, dst = here, (2 if here == 1 else 1)
                meta = {"migrate_source": self.lab.node_name(src),
                        "migrate_target": self.lab.node_name(dst)}
                m_to = self.agent(who, dom, src, "migrate_to", meta=meta)
                m_from = self.agent(who, dom, dst, "migrate_from", meta=meta)
                m_stop = self.agent(who, dom, src, "stop")
                downtime = self.domjobinfo_downtime(dst, dom)
                source = "virsh domjobinfo --completed"
                if downtime is None:
                    # the agent read (and so consumed) the completed job's statistics: take
                    # the same libvirt figure from its log line
                    hit = re.findall(r"downtime (\d+) ms", m_from.stderr)
                    downtime = int(hit[-1]) / 1000.0 if hit else None
                    source = "the agent's migrate_from log (same libvirt job statistics)"
                self.notes.setdefault("downtime_source", {})[who] = source
                if self.running_on(dom) != [dst]:
                    raise BenchError("after %s's migration %s runs on %s, not %s"
                                     % (who, dom.name, self.running_on(dom), dst))
                self.lab.guest_write(dst, dom.name, 0)   # the lock follows the guest
                self.add(("migrate_to", who), m_to)
                self.add(("migrate_from", who), m_from)
                self.add(("source stop", who), m_stop)
                self.add(("downtime", who), downtime)
                self.add(("migrate direction", who), "%d->%d" % (src, dst))
                here = dst
        self.agent(OURS, dom, here, "stop")

    def qemu_pid(self, node, dom):
        p = self.lab.run(node, ["cat", "/run/libvirt/qemu/%s.pid" % dom.name], check=False)
        return int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip() else None

    def bench_recovery(self):
        """A killed holder: QEMU on node 2 holds the image's lock and dies (SIGKILL: its watch
        lingers ~30 s), then node 2 leaves the cluster (Pacemaker stopped there) and is
        recorded as fenced (`stonith_admin --confirm`, as an administrator confirms a node
        powered off by hand; its Ceph daemons stay up, so Ceph keeps its quorum and the
        figure is not about Ceph recovering); the agent starts the domain on node 1 and the
        new QEMU writes. vmceph sees the holder on a fenced node, blocklists it and breaks
        its lock; VirtualDomain starts at once and the first write waits for librbd to time
        the dead holder out. The same sequence for both agents. (A node that only left
        cleanly, unfenced, may still run its QEMUs: vmceph refuses to start then, so the
        scenario records the fence.)"""
        dom = self.domains["bm-rec"]
        extra = {"blocklist_expire": "600"}
        for k, order in self.pairs(self.plan.recovery):
            for who in order:
                self.destroy_everywhere(dom)
                self.virsh(2, "create", dom.config, timeout=120)
                self.lab.guest_write(2, dom.name, 0)
                holders = self.lab.image_clients(dom.images[0])["lockers"]
                if [h["addr"].split(":")[0] for h in holders] != [self.lab.node_ip(2)]:
                    raise BenchError("recovery: node 2 does not hold the lock: %s" % holders)
                t_kill = time.monotonic()
                os.kill(self.qemu_pid(2, dom), signal.SIGKILL)
                self.pacemaker_leave(2)
                self.lab.run(1, ["stonith_admin", "--confirm", self.lab.node_name(2)],
                             timeout=60)
                wait_s = time.monotonic() - t_kill
                t0 = time.monotonic()
                m = self.agent(who, dom, 1, "start", extra=extra)
                write_s = self.lab.guest_write(1, dom.name, 0)
                total = time.monotonic() - t0
                self.add(("recovery start", who), m)
                self.add(("recovery first write", who), write_s)
                self.add(("recovery total", who), total)
                self.add(("recovery kill->start", who), wait_s)
                self.log("recovery %s: kill -> start %.1f s, start %.2f s, first write %.2f s, "
                         "start -> write %.2f s" % (who, wait_s, m.wall, write_s, total))
                if who == OURS and "broke the exclusive lock" not in m.stderr:
                    self.notes.setdefault("recovery_warnings", []).append(
                        "vmceph run %d did not report a broken lock: %s" % (k, m.stderr[-500:]))
                self.agent(who, dom, 1, "stop", extra=extra)
                self.pacemaker_join(2)
                self.unblock(2)
        self.destroy_everywhere(dom)

    def pacemaker_leave(self, i, timeout=60):
        """Stop Pacemaker, then corosync, on node i (clean: the others see it offline)."""
        for daemon in ("pacemaker", "corosync"):
            pid = self.lab.daemon_pid(i, daemon)
            if pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while self.lab.daemon_pid(i, daemon):
                    if time.monotonic() > deadline:
                        raise BenchError("%s on %s did not stop" % (daemon, self.lab.node_name(i)))
                    time.sleep(0.1)
        name = self.lab.node_name(i)
        deadline = time.monotonic() + timeout
        while self.lab.pacemaker_nodes(node=1).get(name) != "offline":
            if time.monotonic() > deadline:
                raise BenchError("Pacemaker on n1 does not see %s offline" % name)
            time.sleep(0.2)

    def pacemaker_join(self, i):
        """Start corosync and Pacemaker on node i again (as the lab does), wait until every
        node is online, and let CephHealth publish node i's attributes again."""
        self.lab.spawn(i, "corosync", "exec corosync -f")
        self.lab.spawn(i, "pacemaker",
                       "for k in $(seq 150); do corosync-cmapctl -g totem.cluster_name"
                       " >/dev/null 2>&1 && break; sleep 0.2; done;"
                       " PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none"
                       " exec pacemakerd")
        self.lab.wait_pacemaker_online(len(self.lab.indexes), timeout=90, node=1)
        self.cephhealth(i, "start")

    def unblock(self, node):
        """Remove the blocklist entries of node's address (admin: rbd profile may not)."""
        out = self.lab.ceph(1, "osd", "blocklist", "ls")
        for line in out.splitlines():
            addr = line.split()[0] if line.strip() else ""
            if addr.startswith(self.lab.node_ip(node) + ":"):
                self.lab.ceph(1, "osd", "blocklist", "rm", addr)

    # ------------------------------------------------------------------ rows and targets
    def series(self, key, attr):
        return [getattr(m, attr) for m in self.get(key)]

    def pair_row(self, scenario, label=None, note_ours="", note_vd=""):
        rows = []
        a, b = self.get((scenario, OURS)), self.get((scenario, VD))
        rw = stats.pair_ratios([m.wall for m in a], [m.wall for m in b]) if b else None
        rc = stats.pair_ratios([m.cpu for m in a], [m.cpu for m in b]) if b else None
        if a:
            rows.append(stats.Row(label or scenario, OURS, [m.wall for m in a],
                                  [m.cpu for m in a], [m.maxrss_kib for m in a], rw, rc,
                                  note_ours))
        if b:
            rows.append(stats.Row(label or scenario, VD, [m.wall for m in b],
                                  [m.cpu for m in b], [m.maxrss_kib for m in b],
                                  note=note_vd))
        return rows

    def summed(self, keys, who):
        """Per-run sums of several actions (e.g. start + stop) as (wall, cpu, rss) lists."""
        runs = list(zip(*[self.get((k, who)) for k in keys]))
        return ([sum(m.wall for m in r) for r in runs], [sum(m.cpu for m in r) for r in runs],
                [max((m.maxrss_kib or 0) for m in r) or None for r in runs])

    def sum_rows(self, keys, label):
        a, b = self.summed(keys, OURS), self.summed(keys, VD)
        rows = []
        if a[0]:
            rows.append(stats.Row(label, OURS, a[0], a[1], a[2],
                                  stats.pair_ratios(a[0], b[0]) if b[0] else None,
                                  stats.pair_ratios(a[1], b[1]) if b[1] else None))
        if b[0]:
            rows.append(stats.Row(label, VD, b[0], b[1], b[2]))
        return rows

    def rows(self):
        rows = []
        floors = ["floor: python3 -c pass", "floor: python3 -S -c pass",
                  "floor: libvirt state query", "floor: libvirt state query, -S"]
        for f in floors:
            ms = self.get((f, None))
            if ms:
                rows.append(stats.Row(f, "-", [m.wall for m in ms], [m.cpu for m in ms],
                                      [m.maxrss_kib for m in ms]))
        rows += self.pair_row("monitor", "monitor, depth 0 (running)")
        ours = self.get(("monitor", OURS))
        for floor, label in (("floor: libvirt state query", "libvirt floor"),
                             ("floor: libvirt state query, -S", "libvirt floor -S")):
            fl = self.get((floor, None))
            if ours and fl:
                rows.append(stats.Row("monitor, depth 0 vs %s" % label, OURS,
                                      [m.wall for m in ours], [m.cpu for m in ours],
                                      [m.maxrss_kib for m in ours],
                                      stats.pair_ratios([m.wall for m in ours],
                                                        [m.wall for m in fl]),
                                      stats.pair_ratios([m.cpu for m in ours],
                                                        [m.cpu for m in fl]),
                                      "ratio to the floor run in the same round"))
        for depth in (10, 20):
            rows += self.pair_row("monitor depth %d" % depth,
                                  "monitor, depth %d (running)" % depth)
        rows += self.pair_row("probe", "probe (stopped domain)")
        if "cluster_probes" in self.notes:
            r, n = self.notes["cluster_probes"]
            rows += self.pair_row("cluster probes", "start-up probes: %d resources x %d nodes "
                                  "(%d probes, one after another, summed)" % (r, n, r * n))
        for n in self.plan.disks:
            rows += self.pair_row("start %d" % n, "start, %d RBD disk%s" % (n, "s" * (n > 1)))
            rows += self.pair_row("stop %d" % n, "stop, %d RBD disk%s" % (n, "s" * (n > 1)))
            rows += self.sum_rows(["start %d" % n, "stop %d" % n],
                                  "start+stop, %d RBD disk%s" % (n, "s" * (n > 1)))
        rows += self.pair_row("migrate_to")
        rows += self.pair_row("migrate_from")
        rows += self.sum_rows(["migrate_to", "migrate_from"], "migrate_to+migrate_from")
        rows += self.pair_row("source stop", "stop on the source after migration")
        rows += self.pair_row("recovery start", "recovery: start after a killed holder")
        ch = self.get(("CephHealth monitor", "CephHealth"))
        if ch:
            rows.append(stats.Row("CephHealth monitor (quorum + health)", "CephHealth",
                                  [m.wall for m in ch], [m.cpu for m in ch],
                                  [m.maxrss_kib for m in ch]))
        return rows

    def start_slopes(self):
        """{who: {"points": [(disks, median start wall)], "slope": s/disk, "segments": [...],
        "cpu_slope": ...}} for the start cost per extra disk."""
        out = {}
        for who in (OURS, VD):
            pts, cpts = [], []
            for n in self.plan.disks:
                s = stats.summarize([m.wall for m in self.get(("start %d" % n, who))])
                c = stats.summarize([m.cpu for m in self.get(("start %d" % n, who))])
                if s:
                    pts.append((n, s.median))
                    cpts.append((n, c.median))
            if len(pts) >= 2:
                slope, _ = stats.linear_fit([p[0] for p in pts], [p[1] for p in pts])
                cslope, _ = stats.linear_fit([p[0] for p in cpts], [p[1] for p in cpts])
                out[who] = {"points": pts, "slope": slope, "cpu_slope": cslope,
                            "segments": stats.segment_slopes(pts),
                            "cpu_points": cpts}
        return out

    def recovery_rows(self):
        rows = []
        for who in (OURS, VD):
            st = self.get(("recovery start", who))
            if not st:
                continue
            rows.append([who, str(len(st)),
                         stats.cell_ms(stats.summarize([m.wall for m in st]), 0),
                         stats.cell_ms(stats.summarize(self.get(("recovery first write", who))), 0),
                         stats.cell_ms(stats.summarize(self.get(("recovery total", who))), 0)])
        return rows

    def downtime_rows(self):
        rows = []
        for who in (OURS, VD):
            d = self.get(("downtime", who))
            if not d:
                continue
            rows.append([who, str(len([x for x in d if x is not None])),
                         stats.cell_ms(stats.summarize(d), 0),
                         ", ".join(self.get(("migrate direction", who))),
                         self.notes.get("downtime_source", {}).get(who, "")])
        return rows

    def cpu_200_rows(self, vms=200, interval_s=10.0):
        """CPU of ``vms`` monitors every ``interval_s``: the mean CPU of one monitor process
        (mean, not median: it is a sustained load), and with libvirtd's share added."""
        rows = []
        for key, label in ((("monitor", OURS), "vmceph, depth 0"),
                           (("monitor", VD), "VirtualDomain, depth 0"),
                           (("monitor depth 10", OURS), "vmceph, depth 10"),
                           (("monitor depth 20", OURS), "vmceph, depth 20")):
            ms = self.get(key)
            if not ms:
                continue
            cpu = stats.mean([m.cpu for m in ms])
            srv_mean = stats.mean([m.server_cpu for m in ms])
            rows.append([label, str(len(ms)), stats.ms(cpu, 1),
                         "%.0f %%" % stats.cpu_percent_of_core(cpu, vms, interval_s),
                         "-" if srv_mean is None else stats.ms(srv_mean, 1),
                         "-" if srv_mean is None else "%.0f %%" % stats.cpu_percent_of_core(
                             cpu + srv_mean, vms, interval_s)])
        return rows

    def curve_rows(self, interval_s=10.0):
        """(table rows, {who: [(VMs, % of one core)]}) of the monitor curve: per count of
        running VMs and agent, the mean CPU of one monitor, the node's share of one core
        for one monitor of each VM per ``interval_s`` (agents; agents + libvirtd), and
        vmceph's CPU over VirtualDomain's, paired by round."""
        rows, points = [], {OURS: [], VD: []}
        for n in self.plan.curve:
            a, b = self.get(("curve %d" % n, OURS)), self.get(("curve %d" % n, VD))
            if not a and not b:
                continue
            row = [str(n)]
            for who, rounds in ((OURS, a), (VD, b)):
                if not rounds:
                    row += ["-", "-", "-"]
                    continue
                cpu = stats.mean([t.cpu for t in rounds])
                srv = stats.mean([t.server_cpu for t in rounds])
                pct = 100.0 * cpu / interval_s
                points[who].append((n, pct))
                row += [stats.ms(cpu / n, 1), "%.1f %%" % pct,
                        "-" if srv is None else "%.1f %%" % (100.0 * (cpu + srv) / interval_s)]
            r = stats.summarize(stats.pair_ratios([t.cpu for t in a], [t.cpu for t in b])) \
                if a and b else None
            row.append("-" if r is None else "%.2fx" % r.median)
            rows.append(row)
        return rows, points

    @staticmethod
    def checks_slope(prof):
        """([(disks, median seconds of vmceph's facts gathering)], slope) from the profiles,
        or None."""
        per = (prof or {}).get("checks_per_disk") or {}
        pts = [(n, stats.Summary(v).median) for n, v in sorted(per.items()) if v]
        if len(pts) < 2:
            return None
        return pts, stats.linear_fit([p[0] for p in pts], [p[1] for p in pts])[0]

    def targets(self, prof=None):
        T = stats.Target
        out = []

        def ratio_text(ratio, a, b, digits=1):
            return "%.2fx (%s vs %s ms)" % (ratio.median, stats.ms(stats.Summary(a).median, digits),
                                            stats.ms(stats.Summary(b).median, digits))
        mon = [m.wall for m in self.get(("monitor", OURS))]
        mvd = [m.wall for m in self.get(("monitor", VD))]
        fl = [m.wall for m in self.get(("floor: libvirt state query", None))]
        if mon and mvd and fl:
            r_vd = stats.summarize(stats.pair_ratios(mon, mvd))
            r_fl = stats.summarize(stats.pair_ratios(mon, fl))
            out.append(T("monitor depth 0 <= 0.8x VirtualDomain's wall time",
                         ratio_text(r_vd, mon, mvd), r_vd.median <= 0.8))
            out.append(T("monitor depth 0 within 1.2x of the bare libvirt floor",
                         ratio_text(r_fl, mon, fl), r_fl.median <= 1.2))
        else:
            out.append(T("monitor depth 0 <= 0.8x VirtualDomain, <= 1.2x libvirt floor", "-",
                         None))
        if 4 in self.plan.disks:
            a, b = self.summed(["start 4", "stop 4"], OURS), self.summed(["start 4", "stop 4"], VD)
            if a[0] and b[0]:
                r = stats.summarize(stats.pair_ratios(a[0], b[0]))
                out.append(T("start+stop with 4 RBD disks <= 1.0x VirtualDomain's",
                             ratio_text(r, a[0], b[0], 0), r.median <= 1.0))
            else:
                out.append(T("start+stop with 4 RBD disks <= 1.0x VirtualDomain's", "-", None))
        sl = self.start_slopes()
        checks = self.checks_slope(prof)
        if OURS in sl or checks:
            parts, met = [], None
            if checks:
                parts.append("vmceph's checks (facts gathering, cProfile): %s ms at %s disks, "
                             "%.1f ms/disk" % (" / ".join(stats.ms(y, 0) for _, y in checks[0]),
                                               "/".join(str(x) for x, _ in checks[0]),
                                               checks[1] * 1e3))
                met = checks[1] < 0.010 and stats.grows_at_most_linearly(
                    checks[0], tolerance=0.5, floor=0.002)
            if OURS in sl:
                ours = sl[OURS]
                linear = stats.grows_at_most_linearly(ours["points"], tolerance=0.5,
                                                      floor=0.010)
                parts.append("whole start: vmceph %.1f ms/disk, VirtualDomain %s (QEMU opening "
                             "the disks; difference %s), segments %s ms/disk"
                             % (ours["slope"] * 1e3,
                                "%.1f" % (sl[VD]["slope"] * 1e3) if VD in sl else "-",
                                "%.1f" % ((ours["slope"] - sl[VD]["slope"]) * 1e3)
                                if VD in sl else "-",
                                " / ".join("%.1f" % (x * 1e3) for x in ours["segments"])))
                met = linear if met is None else (met and linear)
            out.append(T("start cost grows at most linearly, < 10 ms per extra disk (vmceph's "
                         "own work per disk)", "; ".join(parts), met))
        else:
            out.append(T("start cost linear, < 10 ms per extra disk", "-", None))
        po, pv = ([m.wall for m in self.get(("probe", w))] for w in (OURS, VD))
        if po and pv:
            r = stats.summarize(stats.pair_ratios(po, pv))
            out.append(T("probe of a stopped domain <= 0.8x VirtualDomain's",
                         ratio_text(r, po, pv), r.median <= 0.8))
        else:
            out.append(T("probe of a stopped domain <= 0.8x VirtualDomain's", "-", None))
        co, cv = ([m.wall for m in self.get(("cluster probes", w))] for w in (OURS, VD))
        if co and cv:
            r = stats.summarize(stats.pair_ratios(co, cv))
            res, nodes = self.notes["cluster_probes"]
            out.append(T("a whole cluster's start-up probes (every resource on every node; "
                         "report)", "%d probes: %s" % (res * nodes, ratio_text(r, co, cv, 0)),
                         "report"))
        a, b = self.summed(["migrate_to", "migrate_from"], OURS), \
            self.summed(["migrate_to", "migrate_from"], VD)
        if a[0] and b[0]:
            r = stats.summarize(stats.pair_ratios(a[0], b[0]))
            da, db = (stats.summarize(self.get(("downtime", w))) for w in (OURS, VD))
            same = (da is not None and db is not None
                    and abs(da.median - db.median) <= max(0.010, 0.25 * db.median))
            out.append(T("migrate_to+migrate_from <= 1.0x VirtualDomain's (issue 15)",
                         ratio_text(r, a[0], b[0], 0), r.median <= 1.0))
            out.append(T("same guest downtime (within 25 % or 10 ms)",
                         "%s vs %s ms" % (stats.ms(da.median, 0) if da else "-",
                                          stats.ms(db.median, 0) if db else "-"), same))
        else:
            out.append(T("migrate_to+migrate_from <= 1.0x VirtualDomain's, same downtime", "-",
                         None))
        ro, rv = (stats.summarize(self.get(("recovery total", w))) for w in (OURS, VD))
        if ro:
            out.append(T("recovery: first write within 2 s of start (VirtualDomain: ~28 s)",
                         "%.2f s (max %.2f) vs %s" % (ro.median, ro.max,
                                                      "%.1f s" % rv.median if rv else "-"),
                         ro.max < 2.0))
        else:
            out.append(T("recovery: first write within 2 s of start", "-", None))
        cpu = self.cpu_200_rows()
        if cpu:
            ours = [r for r in cpu if r[0] == "vmceph, depth 0"]
            vd = [r for r in cpu if r[0] == "VirtualDomain, depth 0"]
            out.append(T("CPU for 200 VMs monitored every 10 s (report; no bound was set)",
                         "vmceph %s of one core, VirtualDomain %s (agent processes only)"
                         % (ours[0][3] if ours else "-", vd[0][3] if vd else "-"), None
                         if not (ours and vd) else "report"))
        return out
