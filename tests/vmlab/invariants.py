"""The invariant checker: watches a running lab and records every moment the promise of
vmceph is broken, while scenarios play.

    checker = InvariantChecker(lab, {"vm1": ["vm1-disk0"], ...}).start()
    ... crash, partition, migrate ...
    checker.assert_clean()            # or look at checker.violations
    checker.stop()

The two invariants:

1. **Never two writers.** For every guarded image, at every sample, the clients that have it
   open read-write (its watchers) live on one node. A watcher counts as a writer unless its
   address is blocklisted, or its node is down (it is then a lingering watch of a dead
   QEMU: Ceph drops it ~46 s after a crash, docs/ceph-facts.md), or it belongs to an earlier life
   of a node that has been down since. The one allowed exception is a live migration: for
   the migrating pair of nodes only, and only while the destination's QEMU (started with
   -incoming) is younger than ``migration_window`` seconds.
2. **No VM is lost.** Each VM has a QEMU on some node; a VM without one for longer than
   ``lost_after`` seconds (the time a recovery may take) is a violation, unless the test
   said it stops that VM on purpose (``expect_down``).

Where the data comes from:
- watchers, lockers and the blocklist: imagewatch.py, a long-running sampler inside a live
  node (JSON lines every ``interval`` s). If its node is crashed, partitioned or stops
  answering, it is restarted on another live node (``move_off`` does it ahead of a planned
  crash);
- which node runs which QEMU, and which nodes are up: this process scans /proc (the nodes
  share the host's PID namespace; a node is the network namespace its processes live in)
  every 0.2 s. CLOCK_MONOTONIC is shared too, so a sample taken in a node lines up with
  what happened to the nodes meanwhile.
"""

import json
import os
import subprocess
import threading
import time

from .layout import HERE
from .util import PYTHON, base_env

IMAGEWATCH = HERE / "imagewatch.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PENDING_S = 1.0  # two writers are judged once the /proc scans have caught up with the sample


class Violation:
    def __init__(self, kind, at, text):
        self.kind, self.at, self.text = kind, at, text

    def __repr__(self):
        return f"{self.kind} at {self.at:.1f}: {self.text}"


def _boottime():
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


class QemuScan:
    """{vm: {node index: {"pid", "incoming", "age"}}} of the QEMUs in the lab's nodes, and
    which nodes are up, read from /proc."""

    def __init__(self, lab, vms):
        self.lab, self.vms = lab, set(vms)

    def node_inodes(self):
        inodes = {}
        for i in self.lab.indexes:
            if self.lab.alive(i):
                inodes[self.lab.netns_inode(i)] = i
        return inodes

    def scan(self):
        inodes = self.node_inodes()
        found = {vm: {} for vm in self.vms}
        now = _boottime()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            comm = _read(f"/proc/{entry}/comm")
            if not comm or not comm.startswith("qemu-system"):
                continue
            try:
                inode = os.stat(f"/proc/{entry}/ns/net").st_ino
            except OSError:
                continue
            node = inodes.get(inode)
            raw = _read(f"/proc/{entry}/cmdline", "rb")
            stat = _read(f"/proc/{entry}/stat")
            if node is None or not raw or not stat:
                continue
            args = raw.decode(errors="replace").split("\0")
            name = next((a.split("guest=", 1)[1].split(",")[0] for a in args
                         if a.startswith("guest=")), None)
            if name not in found:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            started = int(fields[19]) / CLK_TCK  # field 22 of stat: starttime, in ticks
            found[name][node] = {"pid": int(entry), "incoming": "-incoming" in args,
                                 "age": now - started}
        return found, set(inodes.values())


class InvariantChecker:
    def __init__(self, lab, vms, interval=0.5, lost_after=45.0, migration_window=30.0,
                 log=None):
        """vms: {vm name: [guarded RBD image names]} (pool lab.pool)."""
        self.lab = lab
        self.vms = {vm: list(images) for vm, images in vms.items()}
        self.image_vm = {img: vm for vm, imgs in self.vms.items() for img in imgs}
        self.interval = interval
        self.lost_after = lost_after
        self.migration_window = migration_window
        self.log = log or (lambda _msg: None)
        self.violations = []
        self.migration_overlaps = []       # (t, vm, image, nodes) seen and allowed
        self.samples = 0
        self.sample_gaps = []              # (from, to) with no sample for > 3 s
        self.expected_down = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._avoid = set()
        self._proc = None
        self._sampler_node = None
        self._last_sample = None
        self._last_sample_at = None        # host monotonic time of the last line read
        # node state, from the /proc scans
        self._alive_hist = []              # (t, frozenset of live nodes)
        self._dead_addrs = set()           # watcher addresses of a node's earlier life
        self._seen_addrs = {i: set() for i in lab.indexes}
        self._qemus = {vm: {} for vm in self.vms}   # latest scan
        self._qemu_hist = {vm: [] for vm in self.vms}  # (t, {node: info})
        self._last_running = {vm: time.monotonic() for vm in self.vms}
        self._lost_reported = set()
        self._pending = []                 # two-writer samples waiting for newer scans
        self._scan = QemuScan(lab, self.vms)
        self._threads = []

    # ------------------------------------------------------------------ life cycle
    def start(self, node=None):
        self._scan_once()
        self._start_sampler(node)
        for target in (self._scan_loop, self._sampler_loop):
            t = threading.Thread(target=target, daemon=True, name=target.__name__)
            t.start()
            self._threads.append(t)
        self.wait_samples(2, timeout=30)
        return self

    def stop(self):
        self._stop.set()
        self._kill_sampler()
        for t in self._threads:
            t.join(5)
        with self._lock:
            self._judge_pending(time.monotonic(), final=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------------ what tests call
    def move_off(self, i):
        """Run the sampler elsewhere than node i (before crashing or partitioning it)."""
        with self._lock:
            self._avoid.add(i)
            if self._sampler_node == i:
                self._restart_sampler(f"moving off {self.lab.node_name(i)}")

    def allow(self, i):
        with self._lock:
            self._avoid.discard(i)

    def expect_down(self, vm, down=True):
        """The test stops vm on purpose (down=True) or has started it again (False)."""
        with self._lock:
            if down:
                self.expected_down.add(vm)
            else:
                self.expected_down.discard(vm)
                self._last_running[vm] = time.monotonic()
                self._lost_reported.discard(vm)

    def wait_samples(self, n=1, timeout=30):
        """Wait until n more samples have been checked (fresh data after an event)."""
        target = self.samples + n
        end = time.monotonic() + timeout
        while self.samples < target:
            if time.monotonic() > end:
                raise TimeoutError(f"the image sampler gave no sample for {timeout} s")
            time.sleep(0.05)

    def qemu_nodes(self, vm):
        """Nodes with a QEMU of vm, as of the last /proc scan."""
        with self._lock:
            return sorted(self._qemus.get(vm, {}))

    def since(self, mark):
        """Violations recorded after index mark (mark = len(checker.violations) earlier).
        Waits until the samples taken so far have been judged."""
        end = time.monotonic() + PENDING_S + 2
        while self._pending and time.monotonic() < end and not self._stop.is_set():
            time.sleep(0.1)
        with self._lock:
            return list(self.violations[mark:])

    def assert_clean(self, mark=0):
        bad = self.since(mark)
        assert not bad, "invariant violated:\n" + "\n".join(map(repr, bad))

    def report(self):
        gaps = [round(b - a, 1) for a, b in self.sample_gaps]
        return {"samples": self.samples, "violations": len(self.violations),
                "migration_overlaps": len(self.migration_overlaps),
                "sampler_restarts": self._restarts, "sample_gaps_s": gaps}

    # ------------------------------------------------------------------ the sampler
    _restarts = 0

    def _pick_node(self, prefer=None):
        candidates = [i for i in self.lab.indexes if self.lab.alive(i) and i not in self._avoid]
        if prefer in candidates:
            return prefer
        return candidates[0] if candidates else None

    def _start_sampler(self, prefer=None):
        node = self._pick_node(prefer)
        if node is None:
            self._proc, self._sampler_node = None, None
            return
        args = json.dumps({"pool": self.lab.pool, "images": sorted(self.image_vm),
                           "interval": self.interval})
        argv = ["nsenter", "-t", str(self.lab.holder_pid(node)), "-m", "-n", "-u", "--wd=/",
                "--", PYTHON, str(IMAGEWATCH), args]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, env=base_env(), text=True,
                                      bufsize=1)
        self._sampler_node = node
        self._last_sample_at = time.monotonic()
        self.log(f"invariant sampler running on {self.lab.node_name(node)}")

    def _kill_sampler(self):
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.kill()
            except OSError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _restart_sampler(self, why):
        self._restarts += 1
        self.log(f"invariant sampler restarts ({why})")
        self._kill_sampler()
        self._start_sampler()

    def _sampler_loop(self):
        while not self._stop.is_set():
            proc = self._proc
            if proc is None:
                time.sleep(0.5)
                with self._lock:
                    if self._proc is None and not self._stop.is_set():
                        self._start_sampler()
                continue
            line = proc.stdout.readline()
            if self._stop.is_set():
                return
            if not line:
                with self._lock:
                    if proc is self._proc:
                        self._restart_sampler(f"sampler on node {self._sampler_node} ended")
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "images" not in doc:
                continue
            now = time.monotonic()
            with self._lock:
                if self._last_sample_at is not None and now - self._last_sample_at > 3.0:
                    self.sample_gaps.append((self._last_sample_at, now))
                self._last_sample_at = now
                self._check_sample(doc)
                self.samples += 1

    # ------------------------------------------------------------------ /proc scans
    def _scan_once(self):
        found, alive = self._scan.scan()
        now = time.monotonic()
        with self._lock:
            prev = self._alive_hist[-1][1] if self._alive_hist else None
            if prev != frozenset(alive):
                self._alive_hist.append((now, frozenset(alive)))
                for i in (prev or set()) - alive:
                    # everything that node i's processes had open is from an earlier life
                    self._dead_addrs |= self._seen_addrs[i]
            self._qemus = found
            self._judge_pending(now)
            for vm, nodes in found.items():
                if nodes:
                    self._qemu_hist[vm].append((now, dict(nodes)))
                    self._qemu_hist[vm] = self._qemu_hist[vm][-400:]
                    self._last_running[vm] = now
                    self._lost_reported.discard(vm)
                elif (vm not in self.expected_down and vm not in self._lost_reported
                      and now - self._last_running[vm] > self.lost_after):
                    self._lost_reported.add(vm)
                    self._violate("lost", now, f"{vm} has run nowhere for "
                                  f"{now - self._last_running[vm]:.1f} s")

    def _scan_loop(self):
        while not self._stop.is_set():
            try:
                self._scan_once()
                with self._lock:
                    stale = (self._last_sample_at is not None
                             and time.monotonic() - self._last_sample_at > 4.0)
                    node = self._sampler_node
                    if node is not None and (not self.lab.alive(node) or node in self._avoid
                                             or stale):
                        why = "its node is down" if not self.lab.alive(node) else (
                            "node avoided" if node in self._avoid else "no sample for 4 s")
                        self._restart_sampler(why)
            except Exception as exc:  # noqa: BLE001 - the checker must keep running
                self.log(f"invariant scan error: {exc}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ the checks
    def _alive_between(self, t0, t1):
        """Nodes alive at any moment of [t0, t1] (by the scans; 0.2 s resolution)."""
        alive = set()
        for k, (t, nodes) in enumerate(self._alive_hist):
            end = self._alive_hist[k + 1][0] if k + 1 < len(self._alive_hist) else float("inf")
            if t <= t1 + 0.25 and end >= t0 - 0.25:
                alive |= nodes
        return alive

    def _node_of(self, addr):
        ip = addr.split(":")[0]
        for i in self.lab.indexes:
            if self.lab.node_ip(i) == ip:
                return i
        return None

    @staticmethod
    def _blocklisted(addr, blocklist):
        if not blocklist:
            return False
        ip = addr.split(":")[0]
        return addr in blocklist or f"{ip}:0/0" in blocklist

    def _migrating_pair(self, vm, nodes, t):
        """Is {a, b} = nodes the pair of a live migration of vm around time t? Yes if one of
        them has an incoming QEMU of vm (a migration destination: started with -incoming)
        that was younger than migration_window at t, and the other ran a QEMU of vm within
        that window too."""
        if len(nodes) != 2:
            return False
        recent = [(when, qemus) for when, qemus in self._qemu_hist[vm]
                  if when >= t - self.migration_window]
        for dst in nodes:
            src = next(iter(nodes - {dst}))
            young_incoming = any(
                dst in qemus and qemus[dst]["incoming"]
                and qemus[dst]["age"] + (t - when) <= self.migration_window
                for when, qemus in recent)
            if young_incoming and any(src in qemus for _, qemus in recent):
                return True
        return False

    def _check_sample(self, doc):
        t0, t1 = doc["t0"], doc["t1"]
        alive = self._alive_between(t0, t1)
        blocklist = doc.get("blocklist")
        self._last_sample = doc
        for image, state in doc["images"].items():
            if "watchers" not in state:
                continue
            writers = {}
            for w in state["watchers"]:
                addr = w["addr"]
                node = self._node_of(addr)
                if node is None:
                    self._violate("unknown-writer", t1, f"{image}: watcher {addr} is no node's")
                    continue
                if node in alive:
                    self._seen_addrs[node].add(addr)
                else:
                    self._dead_addrs.add(addr)
                if addr in self._dead_addrs or self._blocklisted(addr, blocklist):
                    continue
                writers.setdefault(node, []).append(addr)
            if len(writers) < 2:
                continue
            vm = self.image_vm[image]
            nodes = set(writers)
            names = ", ".join(f"{self.lab.node_name(i)} ({' '.join(a)})"
                              for i, a in sorted(writers.items()))
            if self._migrating_pair(vm, nodes, t1):
                self.migration_overlaps.append((t1, vm, image, sorted(nodes)))
                continue
            # The /proc scan may not have seen a migration's destination QEMU yet (it runs
            # every 0.2 s, the sample may be younger): judge again after the next scans.
            self._pending.append((t1, vm, image, frozenset(nodes), names))

    def _judge_pending(self, now, final=False):
        keep = []
        for t1, vm, image, nodes, names in self._pending:
            if not final and now < t1 + PENDING_S:
                keep.append((t1, vm, image, nodes, names))
            elif self._migrating_pair(vm, set(nodes), t1):
                self.migration_overlaps.append((t1, vm, image, sorted(nodes)))
            else:
                self._violate("two-writers", t1, f"{image} of {vm} written from {names}")
        self._pending = keep

    def _violate(self, kind, at, text):
        v = Violation(kind, at, text)
        self.violations.append(v)
        self.log(f"INVARIANT VIOLATED: {v}")
