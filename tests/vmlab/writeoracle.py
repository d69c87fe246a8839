"""The write oracle: every lab VM writes stamped blocks all the time through whatever QEMU
runs it, and the image itself is read back to judge "never two writers" and "no
acknowledged write lost" from the data, without asking Ceph who watches the image (the
invariant checker's witness, invariants.py, shares that notion with the agents).

Public API (the chaos harness builds on it; copied in /work/notes/oracle-api.md):

    oracle = WriteOracle(lab, vms=[{"name": "vm1", "image": "vm1-disk0"}, ...],
                         period_s=0.5, write_timeout_s=10.0, slots=4096,
                         offset=1 << 20, log=print)
    oracle.start()               # one writer thread per VM; returns self (also a context mgr)
    ... faults ...
    oracle.quiesce()             # optional: wait until no write is in flight (bounded)
    result = oracle.check()      # reads every image back (librbd, read-only, in a live node)
    result.violations            # [Finding]: kind, vm, text (empty = no second writer seen)
    result.lost_acked            # [Finding]: acknowledged writes absent from the image
    result.longest_gap_s         # {vm: seconds}: the longest time no write was acknowledged
    result.gaps                  # {vm: (from_wall, to_wall)} of that longest gap
    result.writes                # number of writes acknowledged (all VMs)
    result.attempts, result.failed, result.timeouts, result.unverified, result.read_errors
    result.ok                    # no violation, nothing lost, every image read
    oracle.timeline()            # [{"t": wall, "mono": t, "vm", "node", "pid", "gen", "seq",
                                 #   "slot", "status": "acked"|"failed"|"timeout", "error"}]
    oracle.records(vm)           # the same, one VM, in issue order
    oracle.stop()                # stops the writers (each returns within write_timeout_s)
    oracle.pause(vm) / oracle.resume(vm)   # stop / restart writing one VM (VM stopped on purpose)

check() may be called while the writers run (it judges what was issued before it started
reading) and as often as wanted: the slots form a ring, a slot is reused after `slots`
acknowledged writes, so call it at least once per ring (slots * period_s; 34 min at the
defaults) or some writes are only counted as `unverified`.

How a write is made. Each round (period_s) the VM's writer scans /proc for the VM's QEMUs
(all lab nodes share the host's PID namespace: invariants.QemuScan) and writes one stamped
4 KiB block through every one of them that libvirt reports "running" with no job (virsh
domstate + domjobinfo in its node, just before the write): one running QEMU normally, two
in a split brain (each would be a guest writing). During a live migration the writes
pause: HMP qemu-io into a source whose images the migration has inactivated aborts QEMU
(an assertion, seen in the lab), and the destination is paused until the handover. A
QEMU seen for the first time gets the next owner generation. The write is HMP `qemu-io -d <virtio backend> "write
-s FILE OFF 4096"` through `virsh qemu-monitor-command`, FILE holding the stamp
(oracleread.py: run nonce, VM, node, QEMU pid, generation, sequence, slot, wall time, CRC).
HMP answers nothing either way: qemu-io prints its result on QEMU's stdout, which libvirt
logs to /var/log/libvirt/qemu/<vm>.log in the node (a host path, the node's bind mount);
the writer reads the lines appended during the call: "wrote 4096/4096 bytes at offset OFF"
is the acknowledgement, "write failed: ..." a failure (a blocklisted client: "Cannot send
after transport endpoint shutdown", seen in the lab). No line, or virsh killed at
write_timeout_s (a write stuck on an unreachable OSD blocks the QEMU monitor), is a
timeout: the write may still land later, which is what the checks are for.

A VM's slot advances only when a write is acknowledged: a failed or timed-out write is
retried in the same slot by the next write, whichever QEMU makes it. So if a fenced QEMU's
stuck write lands after all, it lands over a newer acknowledged block, which check() sees.

What check() judges, per VM (pure functions below, unit-tested from this spec):
- lost-acked: for each slot, the last acknowledged write to it must be in the image, or a
  write issued after it (any status: a failed one may have landed). Anything else there
  (nothing, an older stamp, another run's) is an acknowledged write lost.
- late-write (a second writer, seen from the data): a block of generation g with sequence
  s while a newer generation g' > g had its first write acknowledged at a sequence < s: the
  old owner wrote after the new owner's first block.
- overwrote-newer: a slot holds generation g while its last acknowledged write was of a
  newer generation: an old owner's write landed over the new owner's block.
- two-owners-acked (from the acknowledgements alone): generation g acknowledged a write
  after a newer generation's first acknowledged write.
- foreign-stamp / unknown-stamp / mismatch: a block of this run the writer never issued,
  another VM's block, or a block whose fields differ from what the log says was issued
  with that sequence.
Gaps: the longest time between consecutive acknowledgements of a VM, counting from
start() and up to stop() (or check()) and excluding the time the VM was paused.
"""

import json
import os
import random
import re
import subprocess
import threading
import time

from .invariants import QemuScan, parse_state
from .layout import HERE
from .oracleread import BLOCK, encode
from .util import PYTHON, LabError

ORACLEREAD = HERE / "oracleread.py"
DEVICE = "/machine/peripheral/virtio-disk0/virtio-backend"
PRUNE_AFTER_S = 300.0   # a block file a late HMP command could still read is kept this long
LOG_WAIT_S = 2.0        # qemu-io's line reaches the log through virtlogd: ~0 s seen


class Finding:
    def __init__(self, kind, vm, text, **facts):
        self.kind, self.vm, self.text, self.facts = kind, vm, text, facts

    def __repr__(self):
        return f"{self.kind} [{self.vm}]: {self.text}"

    def as_dict(self):
        return {"kind": self.kind, "vm": self.vm, "text": self.text, **self.facts}


class OracleResult:
    def __init__(self):
        self.violations, self.lost_acked = [], []
        self.longest_gap_s, self.gaps = {}, {}
        self.writes = self.attempts = self.failed = self.timeouts = self.unverified = 0
        self.read_errors = {}

    @property
    def ok(self):
        return not self.violations and not self.lost_acked and not self.read_errors

    def summary(self):
        return {"writes": self.writes, "attempts": self.attempts, "failed": self.failed,
                "timeouts": self.timeouts, "unverified": self.unverified,
                "violations": [repr(v) for v in self.violations],
                "lost_acked": [repr(v) for v in self.lost_acked],
                "longest_gap_s": {vm: round(s, 2) for vm, s in self.longest_gap_s.items()},
                "read_errors": self.read_errors}

    def __repr__(self):
        return f"OracleResult({self.summary()})"


# ---------------------------------------------------------------------- pure judgement
def judge(vm, records, stamps, run):
    """(violations, lost_acked, unverified) for one VM.

    records: the writer's log, [{"seq", "slot", "gen", "node", "pid", "status"}] (status
    "acked", "failed" or "timeout"); stamps: {slot: decoded stamp} read from the image
    after every record was issued; run: this run's nonce. A stamp with a sequence above
    every record's was issued after the records were taken (check() while the writers
    run): the next check judges it."""
    violations, lost = [], []
    by_seq = {r["seq"]: r for r in records}
    upto = max(by_seq, default=0)
    first_ack = {}                       # gen -> seq of its first acknowledged write
    for r in sorted(records, key=lambda r: r["seq"]):
        if r["status"] == "acked":
            first_ack.setdefault(r["gen"], r["seq"])

    def newer_first(gen, seq):
        """The newest generation > gen whose first acknowledged write precedes seq."""
        later = [(g, s) for g, s in first_ack.items() if g > gen and s < seq]
        return max(later) if later else None

    # the acknowledgements alone
    for r in records:
        if r["status"] == "acked":
            hit = newer_first(r["gen"], r["seq"])
            if hit:
                violations.append(Finding(
                    "two-owners-acked", vm,
                    f"write {r['seq']} through {r['node']} pid {r['pid']} (generation "
                    f"{r['gen']}) was acknowledged after generation {hit[0]} had its first "
                    f"write (seq {hit[1]}) acknowledged", seq=r["seq"], gen=r["gen"]))

    # the last write issued to each slot (the ring reuses slots), the last acknowledged one
    last_issued, last_acked = {}, {}
    for r in records:
        if r["seq"] > last_issued.get(r["slot"], {"seq": -1})["seq"]:
            last_issued[r["slot"]] = r
        if r["status"] == "acked" and r["seq"] > last_acked.get(r["slot"], {"seq": -1})["seq"]:
            last_acked[r["slot"]] = r
    acked_total = sum(1 for r in records if r["status"] == "acked")
    unverified = acked_total - len(last_acked)

    for slot, st in sorted(stamps.items()):
        if st["run"] != run:
            continue
        if st["vm"] == vm and st["seq"] > upto:
            continue
        if st["vm"] != vm:
            violations.append(Finding("foreign-stamp", vm, f"slot {slot} holds a block of "
                                      f"{st['vm']} (seq {st['seq']}, {st['node']})",
                                      slot=slot, stamp=st))
            continue
        issued = by_seq.get(st["seq"])
        if issued is None:
            violations.append(Finding("unknown-stamp", vm, f"slot {slot} holds seq "
                                      f"{st['seq']} the writer never issued", slot=slot,
                                      stamp=st))
            continue
        if (issued["slot"], issued["gen"], issued["node"], issued["pid"]) != (
                slot, st["gen"], st["node"], st["pid"]):
            violations.append(Finding("mismatch", vm, f"slot {slot} holds seq {st['seq']} "
                                      f"but not as issued ({issued})", slot=slot, stamp=st))
            continue
        hit = newer_first(st["gen"], st["seq"])
        if hit:
            violations.append(Finding(
                "late-write", vm,
                f"slot {slot} holds seq {st['seq']} of generation {st['gen']} ({st['node']} "
                f"pid {st['pid']}, {issued['status']}), issued after generation {hit[0]}'s "
                f"first acknowledged write (seq {hit[1]}): an old owner wrote after the new "
                f"one", slot=slot, stamp=st))

    for slot, acked in sorted(last_acked.items()):
        st = stamps.get(slot)
        ours = st is not None and st["run"] == run and st["vm"] == vm
        if ours and st["seq"] >= acked["seq"]:
            continue
        found = (f"seq {st['seq']} of generation {st['gen']} ({st['node']})" if ours
                 else "a block of another run" if st is not None else "no stamp")
        lost.append(Finding("lost-acked", vm,
                            f"acknowledged write {acked['seq']} (generation {acked['gen']}, "
                            f"{acked['node']} pid {acked['pid']}) to slot {slot} is gone: "
                            f"the slot holds {found}", slot=slot, seq=acked["seq"]))
        if ours and st["gen"] < acked["gen"]:
            violations.append(Finding(
                "overwrote-newer", vm,
                f"slot {slot}: generation {st['gen']}'s seq {st['seq']} ({st['node']} pid "
                f"{st['pid']}) landed over generation {acked['gen']}'s acknowledged seq "
                f"{acked['seq']} ({acked['node']})", slot=slot, stamp=st))
    return violations, lost, unverified


def longest_gap(ack_times, start, end, paused=()):
    """(seconds, from, to): the longest stretch of [start, end] with no acknowledgement,
    minus the paused intervals [(a, b)] overlapping it."""
    points = [start] + sorted(t for t in ack_times if start <= t <= end) + [end]
    best = (0.0, start, start)
    for a, b in zip(points, points[1:]):
        length = b - a
        for pa, pb in paused:
            length -= max(0.0, min(b, pb) - max(a, pa))
        if length > best[0]:
            best = (length, a, b)
    return best


# ---------------------------------------------------------------------- the writers
class _Writer(threading.Thread):
    def __init__(self, oracle, vm, image):
        super().__init__(daemon=True, name=f"oracle-{vm}")
        self.o, self.vm, self.image = oracle, vm, image
        self.records = []
        self.gens = {}                 # (node, pid) -> generation
        self.slot, self.seq = 0, 0
        self.busy = False
        self.paused = False
        self.pauses = []               # (from, to) monotonic; to None while paused
        self.files = []                # (created, path)

    def run(self):
        while not self.o._stop.is_set():
            t0 = time.monotonic()
            if not self.paused:
                try:
                    self.round()
                except Exception as exc:  # noqa: BLE001 - the writer must keep going
                    self.o.log(f"write oracle {self.vm}: {type(exc).__name__}: {exc}")
            self.prune()
            self.o._stop.wait(max(0.05, self.o.period_s - (time.monotonic() - t0)))

    def round(self):
        found, _alive = self.o._scan.scan()
        qemus = found.get(self.vm, {})
        # oldest first: a newer QEMU is a newer owner
        for node, info in sorted(qemus.items(), key=lambda kv: -kv[1]["age"]):
            # Written only while libvirt says "running" with no job: libvirt starts every
            # QEMU paused (-S) and a migration's destination is paused until the handover
            # (writing through them would be us making a writer the agents never let
            # run), and HMP qemu-io into a QEMU whose images an outgoing migration has
            # inactivated aborts it (seen: "bdrv_co_write_req_prepare: Assertion
            # `!(bs->open_flags & BDRV_O_INACTIVE)' failed", QEMU 7.2, the source then
            # "crashed"). A migration takes over a second to reach that point, so a
            # look taken just before the write (re-taken if it got slow) is enough; the
            # VM's writes pause for the migration, which its gap shows.
            for _ in range(3):
                t = time.monotonic()
                state, job = self.libvirt_state(node)
                if state != "running" or job or time.monotonic() - t < 0.5:
                    break
            if state == "running" and not job:
                self.write(node, info["pid"])

    def libvirt_state(self, node):
        try:
            p = self.o.lab.run(node, ["virsh", "-c", "qemu:///system",
                                      f"domstate {self.vm}; domjobinfo {self.vm}"],
                               timeout=self.o.write_timeout_s, check=False)
        except (LabError, subprocess.SubprocessError, OSError):
            return "unknown", False
        return parse_state(p.stdout, p.returncode)

    def write(self, node, pid):
        o, lab = self.o, self.o.lab
        key = (node, pid)
        if key not in self.gens:
            self.gens[key] = o._next_gen(self.vm)
            o.log(f"write oracle {self.vm}: generation {self.gens[key]} is "
                  f"{lab.node_name(node)} pid {pid}")
        gen = self.gens[key]
        self.seq += 1
        seq, slot, wall = self.seq, self.slot, time.time()
        name = lab.node_name(node)
        path = os.path.join(o.dir, f"{self.vm}-{seq}.blk")
        with open(path, "wb") as f:
            f.write(encode(o.run, self.vm, name, pid, gen, seq, slot, wall))
        self.files.append((time.monotonic(), path))
        offset = o.offset + slot * BLOCK
        log = lab.node_dir(node, "log-libvirt", "qemu", f"{self.vm}.log")
        size = _size(log)
        rec = {"vm": self.vm, "seq": seq, "slot": slot, "gen": gen, "node": name,
               "pid": pid, "t": wall, "t0": time.monotonic(), "t1": None,
               "status": "timeout", "error": ""}
        self.busy = True
        try:
            hmp = f'qemu-io -d {DEVICE} "write -s {path} {offset} {BLOCK}"'
            try:
                p = lab.run(node, ["virsh", "-c", "qemu:///system", "qemu-monitor-command",
                                   self.vm, "--hmp", hmp], timeout=o.write_timeout_s,
                            check=False)
            except (LabError, subprocess.SubprocessError, OSError) as exc:
                rec["error"] = f"virsh: {type(exc).__name__}: {str(exc)[:200]}"
                p = None
            if p is not None and p.returncode != 0:
                rec["status"], rec["error"] = "failed", (p.stderr or p.stdout).strip()[:300]
            elif p is not None:
                rec["status"], rec["error"] = _outcome(log, size, offset)
        finally:
            rec["t1"] = time.monotonic()
            self.busy = False
        with o._lock:
            self.records.append(rec)
        if rec["status"] == "acked":
            self.slot = (self.slot + 1) % o.slots

    def prune(self):
        now = time.monotonic()
        while self.files and now - self.files[0][0] > PRUNE_AFTER_S:
            _, path = self.files.pop(0)
            try:
                os.unlink(path)
            except OSError:
                pass


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _outcome(log, size, offset):
    """("acked" | "failed" | "timeout", error) from the lines qemu-io appended to the
    QEMU's log since it had `size` bytes (a rotated log is read from its start)."""
    end = time.monotonic() + LOG_WAIT_S
    ok = re.compile(rf"wrote {BLOCK}/{BLOCK} bytes at offset {offset}\b")
    while True:
        if _size(log) < size:
            size = 0
        try:
            with open(log, "rb") as f:
                f.seek(size)
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        if ok.search(text):
            return "acked", ""
        failed = [line for line in text.splitlines()
                  if "write failed" in line or ": No such file" in line]
        if failed:
            return "failed", failed[-1].strip()[:300]
        if time.monotonic() > end:
            return "timeout", "no qemu-io result in the QEMU log"
        time.sleep(0.05)


class WriteOracle:
    def __init__(self, lab, vms, period_s=0.5, write_timeout_s=10.0, slots=4096,
                 offset=1 << 20, log=None):
        self.lab = lab
        self.vms = [dict(v) for v in vms]
        self.period_s, self.write_timeout_s = period_s, write_timeout_s
        self.slots, self.offset = slots, offset
        self.log = log or (lambda _msg: None)
        self.run = random.getrandbits(32)
        self.dir = lab.path("writeoracle", f"{self.run:08x}")
        self._scan = QemuScan(lab, [v["name"] for v in self.vms])
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._gen = {v["name"]: 0 for v in self.vms}
        self._writers = {v["name"]: _Writer(self, v["name"], v["image"]) for v in self.vms}
        self.started = self.stopped = None

    def _next_gen(self, vm):
        with self._lock:
            self._gen[vm] += 1
            return self._gen[vm]

    # ------------------------------------------------------------------ life cycle
    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.started = time.monotonic()
        for w in self._writers.values():
            w.start()
        return self

    def stop(self):
        self._stop.set()
        for w in self._writers.values():
            if w.is_alive():
                w.join(self.write_timeout_s + LOG_WAIT_S + 5)
        if self.stopped is None:
            self.stopped = time.monotonic()
        for w in self._writers.values():
            for _, path in w.files:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            w.files = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def pause(self, vm):
        """Stop writing vm (the test stops it on purpose): not counted in its gaps."""
        w = self._writers[vm]
        if not w.paused:
            w.paused = True
            w.pauses.append([time.monotonic(), None])

    def resume(self, vm):
        w = self._writers[vm]
        if w.paused:
            w.paused = False
            w.pauses[-1][1] = time.monotonic()

    def quiesce(self, timeout=None):
        """Wait (bounded) until no writer has a write in flight."""
        end = time.monotonic() + (timeout or self.write_timeout_s + LOG_WAIT_S + 2)
        while any(w.busy for w in self._writers.values()) and time.monotonic() < end:
            time.sleep(0.05)

    # ------------------------------------------------------------------ looking
    def records(self, vm):
        with self._lock:
            return [dict(r) for r in self._writers[vm].records]

    def timeline(self):
        with self._lock:
            rows = [r for w in self._writers.values() for r in w.records]
        return [{"t": r["t"], "mono": r["t0"], "vm": r["vm"], "node": r["node"],
                 "pid": r["pid"], "gen": r["gen"], "seq": r["seq"], "slot": r["slot"],
                 "status": r["status"], "error": r["error"]}
                for r in sorted(rows, key=lambda r: r["t0"])]

    def acked_since(self, vm, mono):
        """Acknowledged writes of vm completed after monotonic time mono."""
        with self._lock:
            return [r for r in self._writers[vm].records
                    if r["status"] == "acked" and r["t1"] >= mono]

    def wait_acked(self, vm, n=1, timeout=60, since=None):
        """Wait until vm has n acknowledged writes after `since` (default: now); returns
        the seconds it took. Raises TimeoutError."""
        since = time.monotonic() if since is None else since
        end = time.monotonic() + timeout
        while len(self.acked_since(vm, since)) < n:
            if time.monotonic() > end:
                raise TimeoutError(f"write oracle: {vm} acknowledged no write for {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - since

    def read_images(self, node=None):
        """{image: {"stamps": {slot: stamp}} | {"error"}} read in a live node."""
        nodes = [node] if node else [i for i in self.lab.indexes if self.lab.alive(i)]
        args = {"pool": self.lab.pool,
                "images": {v["image"]: [self.offset, self.slots] for v in self.vms}}
        last = None
        for i in nodes:
            try:
                p = self.lab.run(i, [PYTHON, str(ORACLEREAD), json.dumps(args)], timeout=90,
                                 check=False)
                doc = json.loads(p.stdout.strip().splitlines()[-1])
            except (LabError, subprocess.SubprocessError, OSError, ValueError,
                    IndexError) as exc:
                last = f"{self.lab.node_name(i)}: {type(exc).__name__}: {exc}"
                continue
            if "images" in doc:
                out = {}
                for image, got in doc["images"].items():
                    if "stamps" in got:
                        got["stamps"] = {int(k): v for k, v in got["stamps"].items()}
                    out[image] = got
                return out
            last = f"{self.lab.node_name(i)}: {doc.get('error')}"
        return {v["image"]: {"error": last or "no live node"} for v in self.vms}

    def check(self, node=None):
        """Read every image back and judge it against the writers' logs."""
        self.quiesce()
        with self._lock:
            snapshot = {vm: [dict(r) for r in w.records] for vm, w in self._writers.items()}
        images = self.read_images(node)
        end = self.stopped or time.monotonic()
        res = OracleResult()
        for v in self.vms:
            vm, recs = v["name"], snapshot[v["name"]]
            acked = [r for r in recs if r["status"] == "acked"]
            res.writes += len(acked)
            res.attempts += len(recs)
            res.failed += sum(1 for r in recs if r["status"] == "failed")
            res.timeouts += sum(1 for r in recs if r["status"] == "timeout")
            pauses = [(a, b if b is not None else end) for a, b in self._writers[vm].pauses]
            gap, a, b = longest_gap([r["t1"] for r in acked], self.started or end, end,
                                    pauses)
            res.longest_gap_s[vm] = gap
            res.gaps[vm] = (time.time() - (time.monotonic() - a),
                            time.time() - (time.monotonic() - b))
            got = images.get(v["image"], {"error": "not read"})
            if "error" in got:
                res.read_errors[vm] = got["error"]
                continue
            violations, lost, unverified = judge(vm, recs, got["stamps"], self.run)
            res.violations += violations
            res.lost_acked += lost
            res.unverified += unverified
        return res
