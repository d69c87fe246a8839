"""The lab: N "hyperconverged" nodes on one machine, each running Ceph (a mon and a
bluestore OSD, cephx on), libvirtd + QEMU and optionally corosync + Pacemaker, for the
integration tests of the vmceph agents.

A node is a network + mount + UTS namespace whose first process is nodeinit.py (see
there): killing every process of the node's netns is a real power-off. The nodes are
joined by a bridge living in a separate "switch" namespace, so no address is ever added
to the host. Everything the lab creates lives under one state directory (layout.py),
described by its lab.json, so that `down` cleans up from that directory alone.
"""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from . import configs, netns, nodefiles, teardown
from .layout import DEFAULT_STATE_ROOT, HERE, Layout, next_subnet, read_int
from .nodefiles import FENCE_ID
from .util import PYTHON, LabError, StepLog, base_env, run_cmd, tail, wait_until, write_file

NODEINIT = HERE / "nodeinit.py"
INCLUSTER = HERE / "incluster.py"
# First boot of the mons only (Ceph's default is 5 s, restored once the cluster is up):
# mons that start together often lose an ack in their first election and then wait out
# the whole timeout, once or twice.
FIRST_ELECTION_TIMEOUT = 1
DEFAULT_ELECTION_TIMEOUT = 5
REQUIRED = ["ip", "nsenter", "unshare", "setsid", "mount", "monmaptool", "ceph-mon", "ceph-osd",
            "ceph", "rbd", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64"]
REQUIRED_PACEMAKER = ["corosync", "pacemakerd", "cibadmin", "crm_attribute", "crm_mon"]


class Lab(Layout):
    """See tests/vmlab/README.md for the API; node numbers i are 1-based."""

    def __init__(self, name="lab", nodes=3, pacemaker=False, project_root=None, token_ms=1000,
                 state_root=DEFAULT_STATE_ROOT, verbose=True, **options):
        super().__init__(name=name, nodes=nodes, pacemaker=pacemaker, project_root=project_root,
                         token_ms=token_ms, state_root=state_root, **options)
        self.log = StepLog(self.path("lab.log"), verbose)

    @classmethod
    def attach(cls, name="lab", state_root=DEFAULT_STATE_ROOT, verbose=True):
        """The lab described by an existing state directory (the CLI, or a later process)."""
        path = os.path.join(state_root, name, "lab.json")
        try:
            with open(path) as f:
                params = json.load(f)["params"]
        except (OSError, ValueError, KeyError):
            raise LabError(f"no lab {name!r}: {path} missing or unreadable") from None
        return cls(name=name, state_root=state_root, verbose=verbose, **params)

    def __repr__(self):
        return (f"Lab(name={self.name!r}, nodes={self.nodes}, pacemaker={self.pacemaker}"
                + (f", remotes={self.remotes})" if self.remotes else ")"))

    # ------------------------------------------------------------------ node state
    def alive(self, i):
        """True while node i's init runs in node i's netns (a zombie counts as dead)."""
        holder = self.holder_pid(i)
        return (holder is not None and netns.pid_alive(holder)
                and netns.pid_netns_inode(holder) == self.netns_inode(i))

    def first_alive(self, prefer=1):
        for i in [prefer, *self.indexes]:
            if 1 <= i <= self.total and self.alive(i):
                return i
        raise LabError(f"lab {self.name}: no node is running")

    def _require_alive(self, i):
        if not 1 <= i <= self.total:
            raise LabError(f"no node {i} (lab {self.name} has {self.total})")
        if not self.alive(i):
            raise LabError(f"node {self.node_name(i)} is down")
        return self.holder_pid(i)

    def daemon_pid(self, i, name):
        """PID of the daemon spawn()ed as `name` if it still runs in node i, else None."""
        pid = read_int(self.node_dir(i, "pids", name))
        if pid and netns.pid_alive(pid) and netns.pid_netns_inode(pid) == self.netns_inode(i):
            return pid
        return None

    _spawned_pid = daemon_pid  # the name the first integration tests used

    # ------------------------------------------------------------------ running things in nodes
    def run(self, i, argv, timeout=60, input=None, env=None, check=True):
        """Run argv inside node i (its network, mount and UTS namespaces); text-mode result.

        A string argv is run by /bin/sh -c. env is added to a clean environment (PATH of
        Debian's tools). Raises CommandError (also a CalledProcessError) on a non-zero exit
        when check is true, CommandTimeout after timeout seconds (the command is killed).
        """
        holder = self._require_alive(i)
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        full = ["nsenter", "-t", str(holder), "-m", "-n", "-u", "--wd=/", "--", *map(str, argv)]
        return run_cmd(full, timeout=timeout, input=input, env=base_env(env), check=check)

    def spawn(self, i, name, shell_cmd):
        """Start a long-running `sh -c shell_cmd` as a child of node i's init; its output goes
        to <node>/log/NAME.log. Returns its PID (use `exec` to make it the daemon's own)."""
        self._require_alive(i)
        request = {"name": name, "cmd": shell_cmd, "log": self.node_dir(i, "log", f"{name}.log")}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(self.node_dir(i, "init.sock"))
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data or b"{}")
        if "pid" not in reply:
            error = reply.get("error", "no reply")
            raise LabError(f"spawn {name} on {self.node_name(i)} failed: {error}")
        return reply["pid"]

    def ceph(self, i, *args, timeout=30):
        """`ceph ARGS` inside node i as client.admin; returns stdout."""
        argv = ["ceph", "--connect-timeout", str(min(10, timeout)), *args]
        return self.run(i, argv, timeout=timeout).stdout

    def virsh(self, i, *args, timeout=60):
        """`virsh -c qemu:///system ARGS` inside node i (its own libvirtd); returns stdout."""
        return self.run(i, ["virsh", "-c", "qemu:///system", *args], timeout=timeout).stdout

    def incluster(self, i, command, run_timeout=60, **args):
        """Run an incluster.py command inside node i; returns its parsed JSON result."""
        argv = [PYTHON, str(INCLUSTER), command, json.dumps(args)]
        return json.loads(self.run(i, argv, timeout=run_timeout).stdout)

    # ------------------------------------------------------------------ up
    def up(self):
        """Bring the whole lab up. Refuses if it is up already. On failure tears everything
        down (keeping the logs in the state dir) and raises LabError with the log tail."""
        if self.is_up():
            raise LabError(f"lab {self.name} is already up (run down first)")
        if os.path.exists(self.state_dir):
            teardown.teardown(self)  # what a killed run left
        self._preflight()
        os.makedirs(self.state_dir)
        self.log.restart_clock()
        used_before = _used_mib()
        try:
            self._up()
        except BaseException as exc:
            report = self._failure_report()
            self.log(f"UP FAILED: {exc}")
            try:
                teardown.teardown(self, keep_logs=True)
            except Exception as down_exc:  # noqa: BLE001 - report both
                report += f"\nteardown after the failure also failed: {down_exc}"
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: torn down, now let it through
            raise LabError(f"lab {self.name}: up failed: {exc}\n{report}") from exc
        self.log(f"UP total {self.log.elapsed():.1f}s; memory used +{_used_mib() - used_before} "
                 f"MiB (lab processes RSS {self.memory()['total']} MiB)")

    def is_up(self):
        """Something of this lab exists: its switch or a node namespace, or a node's init."""
        if netns.netns_exists(self.switch_netns):
            return True
        return any(netns.netns_exists(self.netns_name(i)) or self.alive(i) for i in self.all_indexes)

    def _preflight(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root (namespaces, mounts, bridges)")
        tools = REQUIRED + (["ceph-mgr"] if self.mgr else [])
        tools += REQUIRED_PACEMAKER if self.pacemaker else []
        missing = [t for t in tools if not _which(t)]
        if missing:
            raise LabError(f"missing programs: {', '.join(missing)} (tests/vmlab/README.md)")
        for _, m in nodefiles.VMCEPH_DIRS:   # ours: no package made it; an empty mount point
            os.makedirs(m, exist_ok=True)
        absent = [m for _, m in nodefiles.private_dirs(self) if not os.path.isdir(m)]
        if absent:
            raise LabError(f"mount points missing on the host: {', '.join(absent)}")
        if len(self.node_dir(self.nodes, "init.sock")) > 100:
            raise LabError(f"state dir {self.state_dir} too long for a unix socket path")
        self._avoid_taken_subnet()

    def _avoid_taken_subnet(self):
        """Two running labs get two subnets: they could share one (their networks are
        separate namespaces), but their logs would be confusing."""
        taken = set()
        for other in Path(self.state_root).glob("*/lab.json"):
            if other.parent.name == self.name:
                continue
            try:
                doc = json.loads(other.read_text())
                if netns.netns_exists(doc["switch"]):
                    taken.add(doc["params"]["subnet"])
            except (OSError, ValueError, KeyError):
                continue
        while self.subnet in taken:
            self.subnet = next_subnet(self.subnet)

    def _up(self):
        log = self.log
        log(f"lab {self.name}: {self.nodes} nodes on {self.network}, "
            f"pacemaker {'on' if self.pacemaker else 'off'}, "
            f"mgr {'on ' + self.node_name(1) if self.mgr else 'none'}, state {self.state_dir}")
        # lab.json first: from now on `down` knows what to remove
        write_file(self.path("lab.json"), json.dumps(self.lab_json(), indent=2) + "\n")
        netns.create_switch(self.switch_netns)
        for i in self.all_indexes:
            self._make_node_netns(i)
        log("network: switch + node namespaces")
        nodefiles.write_cluster_files(self)
        for i in self.all_indexes:
            nodefiles.make_node_dirs(self, i, first_boot=True)
        log("configuration and node directories")
        _parallel(self._boot_init, self.all_indexes)
        log("node inits running (namespaces + mounts)")
        osd_mkfs = _start_parallel(self._osd_mkfs, self.indexes)
        _parallel(self._mon_mkfs, self.indexes)
        for i in self.all_indexes:
            self._spawn_daemons(i, osd=False, election_timeout=FIRST_ELECTION_TIMEOUT)
        log("mons, mgr, libvirtds" + (", corosync + pacemaker" if self.pacemaker else "")
            + " spawned")
        self._form_ceph_cluster(osd_mkfs)
        _parallel(self._setup_libvirt, self.all_indexes)
        log(f"libvirtd answering on every node, ceph secret {self.secret_uuid} defined")
        status = self.wait_ceph_healthy(timeout=120)
        self.incluster(1, "inject", mons=[name for name, _ in self.node_list()],
                       args=[f"--mon_election_timeout={DEFAULT_ELECTION_TIMEOUT}"])
        log(f"Ceph HEALTH_OK ({status['num_up_osds']} OSDs up, "
            f"{status['pgs_clean']}/{status['num_pgs']} PGs clean)")
        if self.pacemaker:
            self.wait_pacemaker_online(self.total, timeout=120)
            log(f"Pacemaker: {self.total} nodes online"
                + (f" ({self.remotes} pacemaker_remote)" if self.remotes else ""))
            self.wait_fence_device(timeout=60)
            log(f"fence device {FENCE_ID} started")
        nodefiles.save_qemu_caps(self)

    def _form_ceph_cluster(self, osd_mkfs):
        """Quorum, then the OSDs (made meanwhile), then the pool."""
        majority = self.nodes // 2 + 1
        self.incluster(1, "wait-quorum", run_timeout=100, count=majority, timeout=90)
        self.log(f"Ceph mon quorum ({majority}+ of {self.nodes})")
        for future in osd_mkfs:
            future.result()
        self.incluster(1, "osd-new", osds=nodefiles.osd_specs(self))
        for i in self.indexes:
            self._spawn_osd(i)
        self.log(f"{self.nodes} bluestore OSDs registered and spawned")
        size, min_size = self.pool_size()
        took = self.incluster(1, "pool-setup", run_timeout=120, pool=self.pool,
                              pg_num=self.pg_num, size=size, min_size=min_size)
        self.log(f"pool {self.pool}: {self.pg_num} PGs, size {size}, min_size {min_size}, "
                 f"rbd pool init (create {took['create_s']}s, all {took['total_s']}s, "
                 f"waits for the OSDs to boot and peer)")

    # ------------------------------------------------------------------ node boot
    def _make_node_netns(self, i):
        """A fresh netns plugged into the switch; its inode is the node's identity."""
        name = self.netns_name(i)
        netns.delete_netns(name)
        netns.add_netns(name)
        netns.plug_node(self.switch_netns, self.switch_port(i), name, f"{self.node_ip(i)}/24")
        write_file(self.node_dir(i, "netns.ino"), f"{netns.netns_inode(name)}\n")

    def _boot_init(self, i):
        """Start node i's init in its netns and in new mount + UTS namespaces; wait until ready."""
        cfg = {"hostname": self.node_name(i), "pidfile": self.node_dir(i, "holder.pid"),
               "socket": self.node_dir(i, "init.sock"), "pid_dir": self.node_dir(i, "pids"),
               "spawn_log": self.node_dir(i, "log", "spawned.log"),
               "umount": ["/run/netns"], "mounts": nodefiles.node_mounts(self, i),
               "mkdirs": ["/run/ceph", "/run/lock", "/run/libvirt"]}
        cfg_path = self.node_dir(i, "nodeinit.json")
        write_file(cfg_path, json.dumps(cfg, indent=1) + "\n")
        log_path = self.node_dir(i, "log", "nodeinit.log")
        # setsid -f: the init is nobody's child here, so no test process has to reap it
        argv = ["setsid", "-f", "nsenter", f"--net={netns.netns_path(self.netns_name(i))}", "--",
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                PYTHON, str(NODEINIT), cfg_path]
        with open(log_path, "a") as out:  # not run_cmd: the init must not inherit our pipes
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           env=base_env(), timeout=10, check=True)
        try:
            wait_until(lambda: self.alive(i), timeout=15, interval=0.05,
                       what=f"init of {self.node_name(i)}")
        except LabError:
            raise LabError(f"node {self.node_name(i)} did not boot:\n{tail(log_path)}") from None

    def _mon_mkfs(self, i):
        self.run(i, ["ceph-mon", "--mkfs", "-i", self.node_name(i),
                     "--monmap", self.path("ceph", "monmap"),
                     "--keyring", self.path("ceph", "mon.keyring")], timeout=60)

    def _osd_mkfs(self, i):
        """Needs no monitor (--no-mon-config): runs while the mons form their quorum."""
        osd = nodefiles.osd_specs(self)[i - 1]
        self.run(i, ["ceph-osd", "-i", str(osd["id"]), "--mkfs", "--osd-uuid", osd["uuid"],
                     "--no-mon-config"], timeout=180)

    def _spawn_osd(self, i):
        self.spawn(i, "osd", f"exec ceph-osd -f -i {i - 1}")

    def _spawn_mon(self, i, election_timeout=None):
        extra = f" --mon-election-timeout {election_timeout}" if election_timeout else ""
        self.spawn(i, "mon", f"exec ceph-mon -f -i {self.node_name(i)}{extra}")

    def _spawn_daemons(self, i, osd=True, election_timeout=None):
        """Spawn node i's daemons, each as soon as what it needs may exist."""
        if self.is_remote(i):
            # compute only: libvirt, QEMU and pacemaker-remoted (TCP 3121, the cluster's
            # connection resource ocf:pacemaker:remote connects to it); no Ceph daemon
            self.spawn(i, "virtlogd", "exec virtlogd")
            self.spawn(i, "libvirtd", "exec libvirtd --listen")
            self.spawn(i, "pacemaker-remoted",
                       "PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none"
                       " exec pacemaker-remoted")
            return
        self._spawn_mon(i, election_timeout)
        if osd:
            self._spawn_osd(i)
        if i == 1 and self.mgr:
            self.spawn(i, "mgr", f"exec ceph-mgr -f -i {self.node_name(i)}")
        self.spawn(i, "virtlogd", "exec virtlogd")
        self.spawn(i, "libvirtd", "exec libvirtd --listen")
        if self.pacemaker:
            self.spawn(i, "corosync", "exec corosync -f")
            # pacemakerd gives up at once if corosync does not answer yet
            self.spawn(i, "pacemaker",
                       "for k in $(seq 150); do corosync-cmapctl -g totem.cluster_name"
                       " >/dev/null 2>&1 && break; sleep 0.2; done;"
                       " PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none"
                       " exec pacemakerd")

    def _libvirtd_answers(self, i):
        return self.run(i, ["virsh", "-c", "qemu:///system", "version"], timeout=10)

    def _setup_libvirt(self, i):
        """Wait for node i's libvirtd, then give it client.vmceph's key as a ceph secret."""
        wait_until(lambda: self._libvirtd_answers(i), timeout=60,
                   what=f"libvirtd on {self.node_name(i)}")
        if self.secret_uuid not in self.virsh(i, "secret-list"):
            # files in the node's private /run: visible to virsh, gone at the node's reboot
            write_file(self.node_dir(i, "run", "secret.xml"),
                       configs.secret_xml(self.secret_uuid, self.ceph_user), 0o600)
            self.virsh(i, "secret-define", "/run/secret.xml")
        key_file = self.node_dir(i, "run", "secret.b64")
        write_file(key_file, nodefiles.user_key(self), 0o600)
        try:
            self.virsh(i, "secret-set-value", "--secret", self.secret_uuid,
                       "--file", "/run/secret.b64")
        finally:
            os.unlink(key_file)

    # ------------------------------------------------------------------ waiting
    def wait_ceph_healthy(self, timeout=120, node=None):
        """HEALTH_OK with every mon in quorum and every OSD up (and, with a mgr, every PG
        active+clean). Returns the status summary (see ceph_status)."""
        i = node or self.first_alive()
        return self.incluster(i, "wait-healthy", run_timeout=timeout + 20, osds=self.nodes,
                              mons=self.nodes, clean=self.mgr, timeout=timeout)

    def quorum(self, node=None):
        """Names of the mons in quorum, as a client in `node` (or the first alive) sees them.
        Right after a mon died this is stale for a few seconds (the mon lease)."""
        i = node or self.first_alive()
        return self.incluster(i, "quorum", run_timeout=20)["quorum_names"]

    def wait_quorum(self, n, timeout=60, node=None):
        """Wait until exactly n mons are in quorum."""
        wait_until(lambda: len(self.quorum(node)) == n, timeout=timeout, interval=0.5,
                   what=f"{n} mons in quorum")

    def ceph_status(self, node=None):
        """{health, checks, quorum_names, num_osds, num_up_osds, num_pgs, pgs_clean,
        mgr_available} from `ceph status`."""
        return self.incluster(node or self.first_alive(), "status", run_timeout=30)

    def pacemaker_nodes(self, node=None):
        """{node name: online|offline|unclean} as crm_mon in `node` (or the first alive)
        sees the cluster."""
        i = node or self.first_alive()
        xml = self.run(i, ["crm_mon", "-1", "--output-as=xml"], timeout=30).stdout
        states = {}
        # only <nodes>/<node>: resources list the node they run on as <node> elements too
        for n in ET.fromstring(xml).iterfind("nodes/node"):
            clean = n.get("unclean") == "false" and n.get("pending") == "false"
            if n.get("online") == "true" and clean:
                states[n.get("name")] = "online"
            else:
                states[n.get("name")] = "unclean" if n.get("unclean") == "true" else "offline"
        return states

    def wait_pacemaker_online(self, n, timeout=60, node=None):
        """Wait until exactly n nodes are online (and clean) in Pacemaker's view."""
        def online_is_n():
            return list(self.pacemaker_nodes(node).values()).count("online") == n
        wait_until(online_is_n, timeout=timeout, interval=0.5, what=f"{n} Pacemaker nodes online")

    def wait_fence_device(self, timeout=60, node=None):
        def started():
            i = node or self.first_alive()
            out = self.run(i, ["crm_resource", "--locate", "-r", FENCE_ID, "-Q"], timeout=20,
                           check=False)
            return out.returncode == 0 and out.stdout.strip()
        wait_until(started, timeout=timeout, interval=0.5, what=f"fence device {FENCE_ID}")

    def fenced_since(self, i, since, node=None):
        """True if the cluster recorded a successful fencing of node i at or after `since`
        (epoch seconds; the history has 1 s resolution)."""
        j = node or self.first_alive()
        # --verbose: without it Pacemaker 2.1.5 lists one successful event per target, and
        # not the newest one (a node's second fencing never showed up)
        out = self.run(j, ["stonith_admin", "--history", self.node_name(i), "--verbose",
                           "--output-as=xml"], timeout=20, check=False).stdout
        try:
            events = ET.fromstring(out).iter("fence_event")
        except ET.ParseError:
            return False
        return any(e.get("status") == "success" and _epoch(e.get("completed")) >= since - 1
                   for e in events)

    # ------------------------------------------------------------------ failures
    def crash(self, i):
        """Power node i off: SIGKILL everything in its netns, exactly what fence_vmlab does."""
        write_file(self.node_dir(i, "crashed_at"), f"{time.time():.3f}\n")
        killed = netns.kill_netns(self.netns_inode(i))
        self.log(f"{self.node_name(i)} powered off ({killed} processes killed)")

    def start_node(self, i, wait=True, fence_timeout=60):
        """Boot node i again: new netns with the same address (also re-plugs a partitioned
        node), new /run, same Ceph data, libvirt definitions and CIB; spawn its daemons.

        With Pacemaker, first waits (up to fence_timeout) until the survivors have fenced
        the node: a fence that arrives late would kill the new node. With wait, returns once
        its libvirtd answers; Ceph and Pacemaker rejoin later (wait_* methods).
        """
        if self.alive(i):
            raise LabError(f"node {self.node_name(i)} is running")
        t0 = time.monotonic()
        if self.pacemaker:
            self._await_fencing(i, fence_timeout)
        if netns.netns_inode(self.netns_name(i)) == self.netns_inode(i):
            netns.kill_netns(self.netns_inode(i))  # a node that was only half dead
        self._make_node_netns(i)
        nodefiles.make_node_dirs(self, i, first_boot=False)
        self._boot_init(i)
        self._spawn_daemons(i)
        if wait:
            wait_until(lambda: self._libvirtd_answers(i), timeout=60,
                       what=f"libvirtd on {self.node_name(i)}")
        self.log(f"{self.node_name(i)} booted in {time.monotonic() - t0:.1f}s")

    def _await_fencing(self, i, timeout):
        crashed = self.node_dir(i, "crashed_at")
        since = float(Path(crashed).read_text()) if os.path.exists(crashed) else 0.0
        others = [j for j in self.indexes if j != i and self.alive(j)]
        if not others or (len(others) < self.nodes // 2 + 1 and self.nodes != 2):
            return  # no quorate partition is left that could fence it
        try:
            wait_until(lambda: self.fenced_since(i, since, node=others[0]), timeout=timeout,
                       interval=0.5, what=f"fencing of {self.node_name(i)}")
        except LabError as exc:
            self.log(f"warning: {exc}; booting anyway")

    def partition(self, i):
        """Pull node i's cable: its switch port goes down; the node keeps running."""
        netns.set_port(self.switch_netns, self.switch_port(i), up=False)
        self.log(f"{self.node_name(i)} partitioned")

    def heal(self, i):
        netns.set_port(self.switch_netns, self.switch_port(i), up=True)
        self.log(f"{self.node_name(i)} reconnected")

    def stop_mon(self, i, timeout=15):
        """Stop only node i's ceph-mon (SIGTERM, SIGKILL after timeout)."""
        pid = self.daemon_pid(i, "mon")
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not netns.pid_alive(pid), timeout=timeout, interval=0.1,
                       what="ceph-mon exit")
        except LabError:
            os.kill(pid, signal.SIGKILL)
        self.log(f"{self.node_name(i)}: ceph-mon stopped")

    def start_mon(self, i):
        if self.daemon_pid(i, "mon") is None:
            self._spawn_mon(i)
            self.log(f"{self.node_name(i)}: ceph-mon started")

    # ------------------------------------------------------------------ VMs and images
    def make_domain_xml(self, name, images, memory_mib=64):
        """A TCG domain with no OS whose disks vda, vdb, ... are rbd/<image> via every mon,
        with the cephx <auth> of client.vmceph."""
        return configs.domain_xml(name, images, [ip for _, ip in self.node_list()],
                                  self.ceph_user, self.secret_uuid, self.pool, memory_mib)

    def rbd_create(self, image, size_mb=64, node=None):
        self.run(node or self.first_alive(),
                 ["rbd", "create", f"{self.pool}/{image}", "--size", f"{size_mb}M"], timeout=60)

    def rbd_remove(self, image, node=None):
        self.run(node or self.first_alive(),
                 ["rbd", "rm", "--no-progress", f"{self.pool}/{image}"], timeout=120)

    def guest_write(self, i, domain, disk_index=0, pattern=0x22):
        """Make the domain's QEMU write 4 KiB at offset 0 of disk disk_index through its own
        librbd handle (HMP qemu-io); return the seconds it took. Raises if the write failed.

        A failure is not in the monitor's reply: qemu-io prints it on QEMU's stderr, i.e.
        the domain's log ("write failed: Cannot send after transport endpoint shutdown");
        before this was read, a blocklisted QEMU's writes all "succeeded" (lab; none
        reached Ceph). -f (Force Unit Access): acknowledged only once Ceph has the data,
        also where librbd's cache is in writeback mode (the lab's disks are
        cache='writeback')."""
        device = f"/machine/peripheral/virtio-disk{disk_index}/virtio-backend"
        hmp = f'qemu-io -d {device} "write -f -P {pattern:#04x} 0 4096"'
        qemu_log = self.node_dir(i, "log-libvirt", "qemu", f"{domain}.log")
        try:
            before = os.path.getsize(qemu_log)
        except OSError:
            before = 0
        t0 = time.monotonic()
        out = self.virsh(i, "qemu-monitor-command", domain, "--hmp", hmp, timeout=120)
        elapsed = time.monotonic() - t0
        if out.strip():
            raise LabError(f"qemu-io on {self.node_name(i)}/{domain}: {out.strip()}")
        try:
            with open(qemu_log, errors="replace") as f:
                f.seek(before)
                failed = [line for line in f.read().splitlines() if "write failed" in line]
        except OSError:
            failed = []
        if failed:
            raise LabError(f"qemu-io on {self.node_name(i)}/{domain}: {failed[-1]}")
        return elapsed

    def image_clients(self, image, node=None):
        """{"lockers": [{client, cookie, addr, tag, exclusive}], "watchers": [{addr, id,
        cookie}]} through a read-only handle, which registers no watch of its own."""
        i = node or self.first_alive()
        return self.incluster(i, "image-clients", run_timeout=40, pool=self.pool, image=image)

    # ------------------------------------------------------------------ looking
    def memory(self):
        """RSS in MiB per node and program of every process in the lab's nodes."""
        report = {"total": 0, "nodes": {}}
        for i in self.all_indexes:
            inode = self.netns_inode(i)
            pids = netns.pids_in_netns(inode) \
                if netns.netns_inode(self.netns_name(i)) == inode else []
            per_program = {}
            for pid in pids:
                name, rss = _name_and_rss(pid)
                per_program[name] = per_program.get(name, 0) + rss
            per_program = {k: v // 1024 for k, v in sorted(per_program.items())}
            report["nodes"][self.node_name(i)] = per_program
            report["total"] += sum(per_program.values())
        return report

    def status(self):
        """A human-readable report: nodes, processes, domains, Ceph, Pacemaker."""
        lines = [f"lab {self.name}: {self.network}, state {self.state_dir}"]
        mem = self.memory()
        for i in self.all_indexes:
            name = self.node_name(i)
            if not self.alive(i):
                lines.append(f"  {name} {self.node_ip(i)}: DOWN")
                continue
            domains = self.run(i, ["virsh", "-c", "qemu:///system", "list", "--name"],
                               timeout=15, check=False).stdout.split()
            rss = mem["nodes"].get(name, {})
            programs = ", ".join(f"{k} {v}" for k, v in rss.items())
            lines.append(f"  {name} {self.node_ip(i)}: up, {sum(rss.values())} MiB RSS "
                         f"({programs}); domains: {' '.join(domains) or '-'}")
        try:
            s = self.ceph_status()
            lines.append(f"  ceph: {s['health']} {s['checks'] or ''} quorum {s['quorum_names']}, "
                         f"OSDs {s['num_up_osds']}/{s['num_osds']} up, "
                         f"PGs {s['pgs_clean']}/{s['num_pgs']} clean")
        except LabError as exc:
            lines.append(f"  ceph: unavailable ({str(exc).splitlines()[0]})")
        if self.pacemaker:
            try:
                lines.append(f"  pacemaker: {self.pacemaker_nodes()}")
            except LabError as exc:
                lines.append(f"  pacemaker: unavailable ({str(exc).splitlines()[0]})")
        lines.append(f"  total RSS of lab processes: {mem['total']} MiB")
        return "\n".join(lines)

    def _failure_report(self):
        """The lab log's tail and the last lines of every daemon that has exited."""
        parts = ["--- lab.log (tail):", tail(self.path("lab.log"), 20)]
        for i in self.all_indexes:
            for line in tail(self.node_dir(i, "log", "spawned.log"), 200).splitlines():
                if " exited, status " in line:
                    name = line.split()[2]
                    parts += [f"--- {self.node_name(i)}: {line}",
                              tail(self.node_dir(i, "log", f"{name}.log"), 8)]
        return "\n".join(parts)[-6000:]

    # ------------------------------------------------------------------ down
    def down(self, keep_logs=False):
        """Complete teardown: no process, netns, bridge or mount of this lab is left, and the
        state dir is removed (keep_logs: only lab.json and the logs stay). Safe to repeat."""
        self.log.restart_clock()
        teardown.teardown(self, keep_logs=keep_logs, log=self.log)
        self.log(f"down: complete in {self.log.elapsed():.1f}s (no process, netns or mount left)")

    def leftovers(self):
        """{"netns", "processes", "mounts"} of this lab still on the machine (empty after down)."""
        return teardown.leftovers(self)


def _which(program):
    return any(os.access(os.path.join(d, program), os.X_OK)
               for d in base_env()["PATH"].split(":"))


def _parallel(fn, items):
    """fn(item) for every item at once (each waits on subprocesses); re-raise the first error."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def _start_parallel(fn, items):
    """Like _parallel, but returns the futures at once: the caller collects them later."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items)))
    futures = [pool.submit(fn, item) for item in items]
    pool.shutdown(wait=False)
    return futures


def _name_and_rss(pid):
    name, rss = "?", 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Name:"):
                    name = line.split()[1]
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return name, rss


def _used_mib():
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) // 1024


def _epoch(text):
    """Pacemaker's history timestamps ('2026-11-26 01:04:09Z', or epoch seconds) as epoch."""
    if not text:
        return 0.0
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        return 0.0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()
