"""make bench, recovery curve (issue 15, item 4): how long a node crash costs with 1, 5 and
10 VMs on the crashed node, and how many Ceph sessions the recovery opens on the monitors.

    PYTHONPATH=lib:tests /usr/bin/python3 -m bench recovery [--counts 1,5,10] [--runs 1]
        [--lab-name benchrec] [--out docs/benchmarks.md | --no-write] [--json FILE]

A three-node lab with Pacemaker configured from cib-examples/pcs.sh (as the end-to-end
tests do; power fencing, `mon lease = 2`), with one-disk VMs vm1..vmN (N the largest
count) that prefer the victim, a node whose monitor is not the leader (INFINITY location
preferences, kept: after the victim's rejoin Pacemaker live-migrates them back). For each
count n, vm1..vmn are enabled and the others disabled, the victim is powered off, and
from that moment the harness measures:

- **each VM writing**: 4 KiB written through the VM's new QEMU on a survivor
  (lab.guest_write, polled every ~0.2 s); the figure of a run is its LAST VM;
- **monitor sessions**: every 0.5 s, the client sessions of both surviving monitors
  (`ceph daemon mon.NAME sessions`, the admin socket answers without quorum); the peak
  over the recovery minus the count just before the crash is what the recovery added
  (each agent process's session, and each new QEMU's librados instance per disk).

The victim then boots again and every VM goes back to it before the next run. The
invariant checker samples every guarded image all along; a violation is reported.
The section is written into docs/benchmarks.md between its markers (the main `make bench`
keeps it) with its chart (bench-recovery-curve.svg).
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

from bench.fencing import leader, wait_writing  # noqa: E402 - shared with fencing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "<!-- recovery-curve:begin -->"
END = "<!-- recovery-curve:end -->"
TITLE = "## Recovery by VMs on the crashed node (measured)"
SVG = "bench-recovery-curve.svg"


def log(msg):
    print("[bench recovery %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr,
          flush=True)


def client_sessions(text):
    """The client sessions in `ceph daemon mon.X sessions` JSON (monitors, OSDs and
    managers are sessions too, and not counted)."""
    return sum(1 for s in json.loads(text) if s.get("con_type") == "client")


class SessionSampler(threading.Thread):
    """Client sessions of the given monitors, summed, every ``interval`` seconds."""

    def __init__(self, lab, nodes, interval=0.5):
        super().__init__(daemon=True)
        self.lab, self.nodes, self.interval = lab, list(nodes), interval
        self.samples = []          # (monotonic, total)
        self._stop_evt = threading.Event()

    def count(self):
        total = 0
        for i in self.nodes:
            p = self.lab.run(i, ["ceph", "daemon", "mon.%s" % self.lab.node_name(i),
                                 "sessions"], check=False, timeout=10)
            if p.returncode != 0:
                return None
            total += client_sessions(p.stdout)
        return total

    def run(self):
        while not self._stop_evt.is_set():
            try:
                n = self.count()
            except (ValueError, OSError, RuntimeError):
                n = None
            if n is not None:
                self.samples.append((time.monotonic(), n))
            self._stop_evt.wait(self.interval)

    def stop(self):
        self._stop_evt.set()
        self.join(15)


class RecoveryCurve:
    def __init__(self, lab, cfg, story, checker, victim, vms):
        self.lab, self.cfg, self.story, self.checker = lab, cfg, story, checker
        self.victim, self.vms = victim, list(vms)
        self.runs = []

    def pcs(self, *args, timeout=120):
        return self.lab.run(self.lab.first_alive(), ["pcs", *args], timeout=timeout)

    def place(self, n):
        """vm1..vmn enabled and on the victim, the others disabled."""
        on, off = self.vms[:n], self.vms[n:]
        for vm in off:
            self.checker.expect_down(vm)      # disabled on purpose: not lost
        if off:
            self.pcs("resource", "disable", *off)
        self.pcs("resource", "enable", *on)
        name = self.lab.node_name(self.victim)
        deadline = time.monotonic() + 300
        while True:
            self.story.settle(timeout=240)
            where = self.story.where()
            if all(where[vm] == [name] for vm in on) and not any(where[vm] for vm in off):
                for vm in on:
                    self.checker.expect_down(vm, False)
                return
            if time.monotonic() > deadline:
                raise RuntimeError("VMs not placed for %d: %s" % (n, where))
            time.sleep(2)

    def one(self, n, timeout=240):
        lab, checker = self.lab, self.checker
        self.place(n)
        vms = self.vms[:n]
        survivors = [i for i in lab.indexes if i != self.victim]
        lead = leader(lab)
        sampler = SessionSampler(lab, survivors)
        base = sampler.count()
        checker.move_off(self.victim)
        mark = len(checker.violations)
        sampler.start()
        t0 = time.monotonic()
        lab.crash(self.victim)
        try:
            writing = wait_writing(lab, survivors, vms, t0, timeout, "%d VMs" % n)
        finally:
            sampler.stop()
        during = [c for t, c in sampler.samples if t >= t0]
        checker.wait_samples(2)
        run = {"vms": n, "victim": lab.node_name(self.victim), "leader": lead,
               "writing": writing, "first_s": min(writing.values()),
               "last_s": max(writing.values()), "sessions_before": base,
               "sessions_peak": max(during) if during else None,
               "session_samples": len(during),
               "violations": [repr(v) for v in checker.since(mark)]}
        log("%d VMs: first writing %.1f s, last %.1f s, monitor client sessions %s -> peak "
            "%s%s" % (n, run["first_s"], run["last_s"], base, run["sessions_peak"],
                      " VIOLATIONS %s" % run["violations"] if run["violations"] else ""))
        self.runs.append(run)
        self.story.rejoin(self.victim)
        return run


def run(args):
    from vmlab import Lab
    from vmlab.cluster_config import configure
    from vmlab.invariants import InvariantChecker
    from vmlab.story import Story
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    vms = ["vm%d" % k for k in range(1, counts[-1] + 1)]
    lab = Lab(name=args.lab_name, nodes=3, pacemaker=True, node_prefix="node", token_ms=1000,
              project_root=ROOT, ceph_conf_extra={"mon lease": 2}, verbose=False)
    if lab.is_up():
        raise SystemExit("lab %r is up already" % args.lab_name)
    t_start = time.monotonic()
    checker = None
    try:
        log("bringing up lab %r" % args.lab_name)
        lab.up()
        lead = leader(lab)
        victim = max(i for i in lab.indexes if lab.node_name(i) != lead)
        name = lab.node_name(victim)
        cfg = configure(lab, vms={vm: 1 for vm in vms}, prefer={vm: name for vm in vms},
                        timeout=600)
        checker = InvariantChecker(lab, cfg.vms, lost_after=300.0).start()
        story = Story(lab, cfg, checker, say=lambda *_: None)
        bench = RecoveryCurve(lab, cfg, story, checker, victim, vms)
        log("lab up and configured in %.0f s; victim %s (mon leader %s)"
            % (time.monotonic() - t_start, name, lead))
        for n in counts:
            for _ in range(args.runs):
                try:
                    bench.one(n)
                except Exception as e:  # noqa: BLE001 - one failed run is reported
                    log("%d VMs: run failed: %r" % (n, e))
                    bench.runs.append({"vms": n, "error": repr(e)[:300]})
        return {"runs": bench.runs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "checker": checker.report(), "minutes": (time.monotonic() - t_start) / 60,
                "counts": counts}
    finally:
        if checker is not None:
            checker.stop()
        lab.down()


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rows(result):
    """Per count: runs, first VM writing, last VM writing (median (min-max)), last over the
    one-VM median of the same run, monitor client sessions before / peak / added."""
    good = [r for r in result["runs"] if "error" not in r]
    single = _med([r["last_s"] for r in good if r["vms"] == 1])
    out = []
    for n in result["counts"]:
        rs = [r for r in good if r["vms"] == n]
        failed = len([r for r in result["runs"] if r["vms"] == n and "error" in r])
        if not rs:
            out.append([str(n), "0 (%d failed)" % failed] + ["-"] * 5)
            continue
        last = [r["last_s"] for r in rs]

        def cell(vals):
            m = _med(vals)
            return "-" if m is None else ("%.1f" % m if len(vals) == 1 else "%.1f (%.1f-%.1f)"
                                          % (m, min(vals), max(vals)))
        added = [r["sessions_peak"] - r["sessions_before"] for r in rs
                 if r["sessions_peak"] is not None and r["sessions_before"] is not None]
        out.append([str(n), str(len(rs)) + (" (%d failed)" % failed if failed else ""),
                    cell([r["first_s"] for r in rs]), cell(last),
                    "-" if not single else "%.2fx" % (_med(last) / single),
                    cell([r["sessions_before"] for r in rs]) + " / " +
                    cell([r["sessions_peak"] for r in rs]),
                    cell(added)])
    return out


def section(result, command):
    from bench import stats
    table = stats.render_markdown(
        ["VMs on the crashed node", "runs", "first VM writing (s)", "last VM writing (s)",
         "last / one VM", "monitor client sessions before / peak", "added by the recovery"],
        rows(result))
    viol = sum(len(r.get("violations", [])) for r in result["runs"])
    return ("Generated by `%s` on %s (%.1f min). Seconds from the power-off of a node whose "
            "monitor is not the leader; medians (min-max) over the runs. Power fencing "
            "(the lab's fence_vmlab), cib-examples' limits (`batch-limit`, "
            "`node-action-limit`, `load-threshold`). Sessions: client sessions of both "
            "surviving monitors together, the agents' and the QEMUs'. Invariant checker: "
            "%d violations.\n\n%s\n\n![recovery by VMs](%s)"
            % (command, result["date"], result["minutes"], viol, table, SVG))


def chart(result):
    from bench import svg
    good = [r for r in result["runs"] if "error" not in r]
    series = {}
    for key, label in (("last_s", "last VM writing"), ("first_s", "first VM writing")):
        pts = [(n, _med([r[key] for r in good if r["vms"] == n])) for n in result["counts"]]
        pts = [(n, v) for n, v in pts if v is not None]
        if pts:
            series[label] = pts
    return svg.line_chart("Node crash: seconds until its VMs write again", "VMs on the "
                          "crashed node", "seconds from the power-off", series)


def write(path, body):
    """The section between its markers in ``path`` (appended when missing)."""
    from vmlab.util import replace_marked
    replace_marked(path, BEGIN, END, "%s\n%s\n\n%s\n%s" % (BEGIN, TITLE, body.strip("\n"),
                                                          END))


def previous(path):
    """The section carried over by the main report, or ''."""
    from vmlab.util import marked
    block = marked(path, BEGIN, END)
    return "\n" + block + "\n" if block else ""


def parse(argv):
    p = argparse.ArgumentParser(prog="python3 -m bench recovery",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="1,5,10", help="VMs on the crashed node, e.g. 1,5,10")
    p.add_argument("--runs", type=int, default=1, help="crashes per count")
    p.add_argument("--lab-name", default="benchrec")
    from bench import report
    report.output_options(p, os.path.join(ROOT, "docs", "benchmarks.md"))
    return p.parse_args(argv)


def main(argv):
    args = parse(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root (the lab)", file=sys.stderr)
        return 2
    from bench import report
    result = run(args)
    report.save_json(args.json, result)
    body = section(result, report.replay("recovery", argv))
    print(body)
    if not args.no_write:
        write(args.out, body)
        with open(os.path.join(os.path.dirname(os.path.abspath(args.out)), SVG), "w") as f:
            f.write(chart(result))
        log("wrote %s" % args.out)
    return 0 if all("error" not in r for r in result["runs"]) else 1

