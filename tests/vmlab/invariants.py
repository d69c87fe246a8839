"""The invariant checker: watches a running lab and records every moment the promise of
vmceph is broken, while scenarios play.

    checker = InvariantChecker(lab, {"vm1": ["vm1-disk0"], ...}).start()
    ... crash, partition, migrate ...
    checker.assert_clean()            # or look at checker.violations
    checker.stop()

The two invariants:

1. **Never two writers.** For every guarded image, at every sample, at most one of the
   clients that have it open read-write (its watchers) is a writer. A watcher is not a
   writer when its address is on the OSD blocklist and the entry has not expired at the
   sample's time, or its node is down (a lingering watch of a dead QEMU: Ceph drops it
   ~46 s after a crash, docs/ceph-facts.md), or it belongs to an earlier life of a node
   that has been down since, or no QEMU on its node has the image on its command line
   any more (a killed QEMU's watch lingers the same way). Two watchers on ONE node are
   two writers too (they are not grouped per node). Two watchers whose QEMUs both exist
   are allowed only while at most one of those QEMUs runs: libvirt is asked (virsh domstate
   and domjobinfo, polled whenever an image is open by QEMUs on two nodes) and the sample
   is judged by the states just before and just after it. That covers a live migration
   (the source runs with a migration job, the destination is paused/incoming; after the
   handover the source is paused until destroyed) and a racing start that lost (its QEMU
   paused, never resumed: not a writer of data; the write oracle, writeoracle.py, checks
   that from the data). A state libvirt did not give counts as running.
   Independently, **both running**: two QEMUs of one image that libvirt reports running in
   one poll (the younger asked first, so a handover in between cannot look like it) is a
   violation.
3. **Coverage.** Every image's longest time without a good sample (an inspection that
   errored is no sample) is kept (``coverage()``, ``report()``); a gap over ``gap_limit``
   (2 s) is a "coverage" violation unless Ceph itself did not answer meanwhile (the
   inspection errored or timed out, took over a second, or the sampler reported waiting on
   Ceph): then it is recorded with that cause and not a violation.
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
  what happened to the nodes meanwhile. A QEMU's images are read from its command line
  (libvirt's -blockdev JSON names them: "image":"vm1-disk0");
- whether a QEMU runs, and its migration job: virsh in its node, only while an image is
  open by QEMUs on two nodes.
"""

import collections
import json
import os
import select
import subprocess
import threading
import time

from .layout import HERE
from .util import PYTHON, base_env

IMAGEWATCH = HERE / "imagewatch.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PENDING_S = 1.0  # two writers are judged once the /proc scans have caught up with the sample
PENDING_MAX_S = 15.0  # ... and libvirt's states too, or, when it does not answer, this late
GAP_LIMIT_S = 2.0
NOT_RUNNING = ("paused", "shut off", "absent", "crashed", "pmsuspended", "gone")


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

    def __init__(self, lab, vms, images=()):
        self.lab, self.vms, self.images = lab, set(vms), list(images)
        self.by_image = {}

    def node_inodes(self):
        inodes = {}
        # remote nodes too (vmlab up --remotes): they run QEMUs like any node
        for i in getattr(self.lab, "all_indexes", self.lab.indexes):
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
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            started = int(fields[19]) / CLK_TCK  # field 22 of stat: starttime, in ticks
            info = {"pid": int(entry), "incoming": "-incoming" in args, "age": now - started,
                    "guest": name}
            line = " ".join(args)
            for image in self.images:
                if f'"image":"{image}"' in line:
                    self.by_image.setdefault(image, {}).setdefault(node, []).append(info)
            if name in found:
                found[name][node] = info
        return found, set(inodes.values())

    def scan_images(self):
        """(found, alive, {image: {node: [info of each QEMU with it on its command line]}})"""
        self.by_image = {}
        found, alive = self.scan()
        return found, alive, self.by_image


class InvariantChecker:
    def __init__(self, lab, vms, interval=0.5, lost_after=45.0, migration_window=None,
                 log=None, gap_limit=GAP_LIMIT_S):
        """vms: {vm name: [guarded RBD image names]} (pool lab.pool). migration_window is
        accepted for older callers and ignored: a migration is now told by libvirt's job
        and states, not by the age of an -incoming QEMU."""
        self.lab = lab
        self.vms = {vm: list(images) for vm, images in vms.items()}
        self.image_vm = {img: vm for vm, imgs in self.vms.items() for img in imgs}
        self.interval = interval
        self.lost_after = lost_after
        self.gap_limit = gap_limit
        self.log = log or (lambda _msg: None)
        self.violations = []
        self.migration_overlaps = []       # (t, vm, image, nodes, why) seen and allowed
        self.fenced_running = []           # (t, image, [(node, pid)]) QEMUs fenced via Ceph
        self.samples = 0                   # samples in which every image was inspected
        self.sample_gaps = []              # (from, to) with no sample for > 3 s
        # coverage, per image: good samples, gaps over gap_limit (from, to, cause)
        self.image_samples = {img: 0 for img in self.image_vm}
        self.image_gaps = {img: [] for img in self.image_vm}
        # every gap between good samples, (t, seconds), the last ~3 h at 0.5 s
        self._gap_log = {img: collections.deque(maxlen=20000) for img in self.image_vm}
        self._last_ok = {img: None for img in self.image_vm}
        self._trouble = {img: None for img in self.image_vm}   # why Ceph did not answer
        self._sampler_note = None          # why the sampler was restarted in a gap
        self._last_good_at = 0.0           # host monotonic time of a sample with an image
        self._sampler_started = 0.0
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
        self._seen_addrs = {i: set() for i in getattr(lab, "all_indexes", lab.indexes)}
        self._qemus = {vm: {} for vm in self.vms}   # latest scan
        self._qemu_hist = {vm: [] for vm in self.vms}  # (t, {node: info})
        self._last_running = {vm: time.monotonic() for vm in self.vms}
        self._lost_reported = set()
        self._pending = []                 # two-writer samples waiting for newer scans
        self._image_hist = {img: [] for img in self.image_vm}  # (t, {node: [qemu info]})
        self._passes = {}                  # image -> [(t0, t1, {(node, pid): (state, job)})]
        self._both_reported = set()
        self._writer_nodes = {}            # image -> (t1, nodes of its writers) last sample
        self._scan = QemuScan(lab, self.vms, self.image_vm)
        self._threads = []

    # ------------------------------------------------------------------ life cycle
    def start(self, node=None):
        self._scan_once()
        self._start_sampler(node)
        for target in (self._scan_loop, self._sampler_loop, self._state_loop):
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
            now = time.monotonic()
            self._judge_pending(now, final=True)
            for image, last in self._last_ok.items():
                if last is not None and now - last > self.gap_limit:
                    self.image_gaps[image].append(
                        (last, now, self._trouble[image] or "open at stop"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------------ what tests call
    def move_off(self, i):
        """Run the sampler elsewhere than node i (before crashing or partitioning it). The
        new sampler is started, and has printed, before the old one is killed: no gap."""
        with self._lock:
            self._avoid.add(i)
            if self._sampler_node != i:
                return
            old = self._proc
            self._restarts += 1
            self.log(f"invariant sampler moves off {self.lab.node_name(i)}")
            self._start_sampler()
            new = self._proc
            if new is not None and old is not None:
                select.select([new.stdout], [], [], 15)
            if old is not None:
                try:
                    old.kill()
                    old.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass

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
        end = time.monotonic() + PENDING_MAX_S + 2
        while self._pending and time.monotonic() < end and not self._stop.is_set():
            time.sleep(0.1)
        with self._lock:
            return list(self.violations[mark:])

    def assert_clean(self, mark=0):
        bad = self.since(mark)
        assert not bad, "invariant violated:\n" + "\n".join(map(repr, bad))

    def report(self):
        gaps = [round(b - a, 1) for a, b in self.sample_gaps]
        excused = {}
        for overlap in self.migration_overlaps:
            excused[overlap[-1]] = excused.get(overlap[-1], 0) + 1
        return {"samples": self.samples, "violations": len(self.violations),
                "migration_overlaps": len(self.migration_overlaps),
                "overlaps_by_cause": excused,
                "sampler_restarts": self._restarts, "sample_gaps_s": gaps,
                "coverage": self.coverage()}

    def coverage(self, since=None):
        """{image: {"samples", "longest_gap_s", "cause"}}: per image, the longest time
        without a good sample that ended after `since` (monotonic; default: all along),
        the still open one included; cause "" when it stayed under gap_limit, else why
        (Ceph did not answer: the reason; "checker": a coverage violation)."""
        since = since or 0.0
        now = time.monotonic()
        out = {}
        with self._lock:
            for image in self.image_vm:
                spans = [(b - a, cause) for a, b, cause in self.image_gaps[image] if b >= since]
                spans += [(gap, "") for t, gap in self._gap_log[image] if t >= since]
                last = self._last_ok[image]
                if last is not None:
                    spans.append((now - max(last, since), self._trouble[image] or ""))
                longest = max(spans, default=(0.0, ""))
                out[image] = {"samples": self.image_samples[image],
                              "longest_gap_s": round(longest[0], 2),
                              "cause": longest[1] if longest[0] > self.gap_limit else ""}
        return out

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
        self._last_sample_at = self._sampler_started = time.monotonic()
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
        self._sampler_note = why
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
            self._on_line(doc)

    def _on_line(self, doc):
        """One JSON line of imagewatch.py: a sample, or a sign that it waits on Ceph."""
        if "busy" in doc or "connect_error" in doc:
            # the sampler waits on Ceph (an inspection over a second, or no connection)
            why = (f"an inspection of {doc['busy']} waited on Ceph"
                   if "busy" in doc else f"no Ceph connection: {doc['connect_error']}")
            with self._lock:
                self._note_trouble(self.image_vm, why)
            return
        if "images" not in doc:
            return
        now = time.monotonic()
        with self._lock:
            if self._last_sample_at is not None and now - self._last_sample_at > 3.0:
                self.sample_gaps.append((self._last_sample_at, now))
            self._last_sample_at = now
            self._check_sample(doc)

    # ------------------------------------------------------------------ /proc scans
    def _scan_once(self):
        found, alive, by_image = self._scan.scan_images()
        now = time.monotonic()
        with self._lock:
            prev = self._alive_hist[-1][1] if self._alive_hist else None
            if prev != frozenset(alive):
                self._alive_hist.append((now, frozenset(alive)))
                for i in (prev or set()) - alive:
                    # everything that node i's processes had open is from an earlier life
                    self._dead_addrs |= self._seen_addrs[i]
            self._qemus = found
            for image in self.image_vm:
                hist = self._image_hist[image]
                hist.append((now, by_image.get(image, {})))
                del hist[:-400]
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
                    now = time.monotonic()
                    # no line for 4 s, or lines but no image inspected for 6 s (its node
                    # cut off from Ceph while Ceph answers elsewhere): try another node
                    stale = (self._last_sample_at is not None
                             and (now - self._last_sample_at > 4.0
                                  or now - max(self._last_good_at, self._sampler_started)
                                  > 6.0))
                    node = self._sampler_node
                    if node is not None and (not self.lab.alive(node) or node in self._avoid
                                             or stale):
                        why = "its node is down" if not self.lab.alive(node) else (
                            "node avoided" if node in self._avoid
                            else "no sample for 4 s or no image inspected for 6 s")
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
        for i in getattr(self.lab, "all_indexes", self.lab.indexes):
            if self.lab.node_ip(i) == ip:
                return i
        return None

    @staticmethod
    def _blocklisted(addr, blocklist, until=None, wall=None):
        """Is addr (or its whole IP) on the blocklist, with an entry that has not expired
        at wall (epoch seconds of the sample)? An entry without a known expiry counts."""
        if not blocklist:
            return False
        ip = addr.split(":")[0]
        for key in (addr, f"{ip}:0/0"):
            if key in blocklist:
                expiry = (until or {}).get(key)
                if expiry is None or wall is None or expiry > wall:
                    return True
        return False

    # ------------------------------------------------------------------ coverage
    def _note_trouble(self, images, why):
        for image in images:
            if self._trouble.get(image) is None and image in self._trouble:
                self._trouble[image] = why

    def _covered(self, image, t1):
        """A good sample of image at t1: closes the gap since the previous one."""
        last = self._last_ok[image]
        if last is not None:
            self._gap_log[image].append((t1, t1 - last))
        if last is not None and t1 - last > self.gap_limit:
            cause = self._trouble[image]
            if cause is None:
                note = f" (sampler restarted: {self._sampler_note})" if self._sampler_note \
                    else ""
                self.image_gaps[image].append((last, t1, "checker"))
                self._violate("coverage", t1, f"{image}: no sample for {t1 - last:.1f} s "
                              f"while Ceph answered{note}")
            else:
                self.image_gaps[image].append((last, t1, f"Ceph did not answer: {cause}"))
        self._last_ok[image] = t1
        self._trouble[image] = None
        self.image_samples[image] += 1

    def _check_sample(self, doc):
        t0, t1 = doc["t0"], doc["t1"]
        alive = self._alive_between(t0, t1)
        blocklist = doc.get("blocklist")
        until, wall = doc.get("blocklist_until"), doc.get("wall")
        self._last_sample = doc
        if t1 - t0 > 1.0:
            self._note_trouble(doc["images"], f"a sample took {t1 - t0:.1f} s")
        complete = True
        for image, state in doc["images"].items():
            if "watchers" not in state:
                complete = False
                self._note_trouble([image], state.get("error", "inspection failed"))
                continue
            self._last_good_at = time.monotonic()
            if image in self._last_ok:
                self._covered(image, t1)
            writers = []
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
                if addr in self._dead_addrs or self._blocklisted(addr, blocklist, until, wall):
                    continue
                writers.append((node, addr))
            self._writer_nodes[image] = (t1, {n for n, _ in writers})
            if len(writers) < 2:
                continue
            vm = self.image_vm[image]
            names = ", ".join(f"{self.lab.node_name(i)} ({a})" for i, a in sorted(writers))
            # judged once the /proc scans and libvirt's states have caught up (PENDING_S)
            self._pending.append((t0, t1, vm, image, tuple(sorted(writers)), names))
        self._sampler_note = None
        if complete:
            self.samples += 1

    def _overlap(self, image, t0, t1, writers, now, final):
        """None (not yet: libvirt's states pending), ("violation", why), or (excuse, why)
        for an image with two or more watchers that are writers by the address rules."""
        nodes = [n for n, _ in writers]
        if len(set(nodes)) < len(nodes):
            return "violation", "two watchers on one node"
        hist = self._image_hist.get(image, [])
        scans = [q for t, q in hist if t0 - 0.3 <= t <= t1 + 0.3]
        if not scans:   # the scans lagged (a loaded machine): the nearest on each side
            scans = [q for t, q in hist[-1::-1] if t0 - 3 <= t < t0][:1] + \
                [q for t, q in hist if t1 < t <= t1 + 3][:1]
        qemus = {}
        for n in nodes:
            if scans and not any(n in q for q in scans):
                continue        # no QEMU with the image on node n: a killed QEMU's watch
            qemus[n] = {info["pid"] for q in scans for info in q.get(n, [])} or {None}
        if len(qemus) < 2:
            return "lingering-watch", "no QEMU with the image behind the other watcher"
        # libvirt's answers from one poll round each (a round asks the younger QEMU
        # first, so a handover during it cannot show both running): the first round that
        # began after the sample, and the last one that ended before it
        passes = self._passes.get(image, [])
        # A round in which a libvirtd did not answer (virsh failed or timed out: five
        # seconds under load) is no answer for that QEMU: the first round after the sample
        # that answered for every QEMU of the pair is the one judged, waiting for it up to
        # PENDING_MAX_S; then, as before, no answer counts as running. Seen in the lab
        # (mass-failover evacuation, 2026-12-01): a target's state "unknown" from a failed
        # poll was judged at once as running, a "two-writers" while the write oracle saw
        # one writer.
        def is_gone(n, pid):
            # a QEMU that the scans no longer see after the sample had ended (a
            # migration's source is destroyed ~0.2 s after the handover) is "gone"
            return pid is not None and any(
                pid not in {i["pid"] for i in q.get(n, [])}
                for t, q in self._image_hist.get(image, []) if t > t1)
        keys = {(n, pid) for n, pids in qemus.items() for pid in pids
                if pid is not None and not is_gone(n, pid)}
        after_pass = next((p for p in passes if p[0] >= t1 and keys <= set(p[2])), None)
        before_pass = next((p for p in reversed(passes) if p[1] <= t0), None)
        before, after, job = {}, {}, False
        for n, pids in qemus.items():
            for pid in pids:
                a = after_pass[2].get((n, pid)) if after_pass else None
                b = before_pass[2].get((n, pid)) if before_pass else None
                gone = is_gone(n, pid)
                if a is None and not gone and not final and now < t1 + PENDING_MAX_S:
                    return None
                a_state = a[0] if a else "gone" if gone else "unknown"
                job = job or any(r[1] for r in (a, b) if r)
                if a_state not in NOT_RUNNING:
                    after[n] = a_state
                # Before the sample, only what libvirt said counts. A QEMU it was not asked
                # about then (a migration's target, born after that round, or not polled
                # while the scans showed it alone) is judged by the round after the sample
                # (above, where no answer counts as running). Taking its state after for
                # its state before made a handover look like both running (lab, corosync
                # cut test, 2026-12-02: "QEMUs running on node2 (running), node3 (unknown)"
                # at a live migration to node3, the write oracle seeing one writer).
                if b and b[0] not in NOT_RUNNING:
                    before[n] = b[0]
        if len(after) >= 2 or len(before) >= 2:
            running = after if len(after) >= 2 else before
            return "violation", "QEMUs running on " + ", ".join(
                f"{self.lab.node_name(n)} ({st})" for n, st in sorted(running.items()))
        return ("migration" if job else "paused-overlap",
                "at most one of the QEMUs ran" + (" (a migration job)" if job else ""))

    def _judge_pending(self, now, final=False):
        keep = []
        for item in self._pending:
            t0, t1, vm, image, writers, names = item
            if not final and now < t1 + PENDING_S:
                keep.append(item)
                continue
            verdict = self._overlap(image, t0, t1, writers, now, final)
            if verdict is None:
                keep.append(item)
            elif verdict[0] == "violation":
                self._violate("two-writers", t1, f"{image} of {vm} written from {names}: "
                              f"{verdict[1]}")
            else:
                self.migration_overlaps.append((t1, vm, image, sorted({n for n, _ in writers}),
                                                verdict[0]))
        self._pending = keep

    # ------------------------------------------------------------------ libvirt's states
    def _poll_state(self, node, guest):
        """(state, migration job?) of domain guest on node, from its libvirtd."""
        try:
            p = self.lab.run(node, ["virsh", "-c", "qemu:///system",
                                    f"domstate {guest}; domjobinfo {guest}"],
                             timeout=5, check=False)
        except Exception:  # noqa: BLE001 - a node gone, a hung libvirtd: state unknown
            return "unknown", False
        state, job = parse_state(p.stdout, p.returncode)
        if state == "running" and job:
            # A migration's source: libvirt updates its cached state from QEMU's STOP
            # event asynchronously, so right after the switchover it may still say
            # "running" while its QEMU's vCPUs are stopped and the target already runs
            # (lab, 2026-12-01 23:41: "QEMUs running on node1 (running), node2 (running)"
            # at a single live migration of vm11, in one poll round that asked the target
            # first, while the write oracle saw one writer). QEMU itself says how it is.
            try:
                q = self.lab.run(node, ["virsh", "-c", "qemu:///system",
                                        "qemu-monitor-command", guest, "--hmp", "info status"],
                                 timeout=5, check=False)
            except Exception:  # noqa: BLE001 - no better answer: libvirt's stands
                return state, job
            state = parse_qemu_status(q.stdout) or state
        return state, job

    def _state_loop(self):
        """While an image is open by QEMUs on two nodes (or two on one), ask their libvirtds
        how each is (youngest first: see both-running) every ~0.3 s."""
        while not self._stop.is_set():
            try:
                busy = self._poll_once()
            except Exception as exc:  # noqa: BLE001 - the checker must keep running
                self.log(f"invariant state poll error: {exc}")
                busy = False
            self._stop.wait(0.3 if busy else 0.2)

    def _poll_once(self):
        """One round of _state_loop; True if an image was open by two QEMUs."""
        with self._lock:
            targets = {}
            for image, hist in self._image_hist.items():
                if not hist:
                    continue
                infos = [(n, info) for n, lst in hist[-1][1].items() for info in lst]
                # and while an overlap of this image waits for libvirt's answers, even when
                # the scans now show one QEMU (the other gone): ask it, or it is judged
                # unanswered, as running
                waiting = any(item[3] == image for item in self._pending)
                if len(infos) >= 2 or (infos and waiting):
                    targets[image] = sorted(infos, key=lambda ni: ni[1]["age"])
        for image, infos in targets.items():
            polled = []
            answers = {}
            t_begin = time.monotonic()
            for node, info in infos:
                if not info.get("guest"):
                    continue
                state, job = self._poll_state(node, info["guest"])
                if state != "unknown":   # virsh failed or timed out: no answer (_overlap)
                    answers[(node, info["pid"])] = (state, job)
                polled.append((node, info["pid"], state))
            with self._lock:
                passes = self._passes.setdefault(image, [])
                passes.append((t_begin, time.monotonic(), answers))
                del passes[:-200]
            running = [(n, pid) for n, pid, st in polled if st == "running"]
            # A QEMU on a node fenced through Ceph (its IP blocklisted host-wide, as
            # fence_vmceph does) runs but cannot write: not a second writer. Recorded
            # (fenced_running), not a violation.
            blocklist = (self._last_sample or {}).get("blocklist")
            fenced = [(n, pid) for n, pid in running
                      if blocklist and f"{self.lab.node_ip(n)}:0/0" in blocklist]
            if fenced and len(running) >= 2:
                self.fenced_running.append((time.monotonic(), image, sorted(fenced)))
            running = [r for r in running if r not in fenced]
            key = frozenset(pid for _, pid in running)
            # Nor is a QEMU whose own client is blocklisted (its watch is excused) or whose
            # watch is gone: when a sample taken around this round shows writer watchers
            # on fewer than two of the running nodes, the others are recorded as fenced.
            with self._lock:
                seen = self._writer_nodes.get(image)
                if len(running) >= 2 and seen is not None and seen[0] >= t_begin - 1.0 \
                        and len({n for n, _ in running} & seen[1]) < 2:
                    self.fenced_running.append((time.monotonic(), image, sorted(
                        r for r in running if r[0] not in seen[1])))
                    running = [r for r in running if r[0] in seen[1]]
            if len(running) >= 2 and key not in self._both_reported:
                self._both_reported.add(key)
                with self._lock:
                    self._violate("both-running", time.monotonic(), f"{image}: libvirt "
                                  "reports its QEMU running on " + ", ".join(
                                      f"{self.lab.node_name(n)} (pid {pid})"
                                      for n, pid in running))
        return bool(targets)

    def _violate(self, kind, at, text):
        v = Violation(kind, at, text)
        self.violations.append(v)
        self.log(f"INVARIANT VIOLATED: {v}")


def parse_qemu_status(out):
    """"paused" or "running" from HMP 'info status' ("VM status: paused (postmigrate)",
    "VM status: running"), None when the answer says neither."""
    for line in out.splitlines():
        if line.strip().startswith("VM status:"):
            word = line.split(":", 1)[1].split()
            if word and word[0] in ("paused", "running"):
                return word[0]
    return None


def parse_state(out, rc=0):
    """(state, migration job?) from `virsh 'domstate D; domjobinfo D'`: the first line is
    the state ("running", "paused", ...), then "Job type:         Unbounded" while a job
    runs ("None" otherwise). A domain libvirt does not know is "absent"."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        return ("absent" if rc else "unknown"), False
    state = lines[0] if not lines[0].startswith("error") else "absent"
    job = any(line.startswith("Job type:") and line.split(":", 1)[1].strip() not in
              ("None", "") for line in lines)
    return state, job
