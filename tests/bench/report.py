"""The report: machine, versions, the tables, as text for the terminal and as Markdown.

docs/benchmarks.md is rewritten by every run, except the hand-written analysis between
``<!-- analysis:begin -->`` and ``<!-- analysis:end -->``, which is carried over from the
existing file (it explains the profiles; the figures around it are regenerated).
"""

import json
import os
import platform
import shlex
import subprocess
import sys
import time

from bench import stats
from bench.profile import summarize_programs
from bench.scenarios import OURS, VD

ANALYSIS_BEGIN = "<!-- analysis:begin -->"
ANALYSIS_END = "<!-- analysis:end -->"

PACKAGES = [("Ceph", "ceph-common"), ("QEMU", "qemu-system-x86"), ("libvirt", "libvirt-daemon"),
            ("libvirt-python", "python3-libvirt"), ("Pacemaker", "pacemaker"),
            ("corosync", "corosync"), ("resource-agents", "resource-agents"),
            ("python3", "python3")]


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _dpkg_version(pkg):
    try:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                           text=True, timeout=10)
        return p.stdout.strip() or "not installed"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def machine():
    cpu = "unknown"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {"CPU": cpu, "cores": str(os.cpu_count()),
            "memory": "%.1f GiB" % (mem_kib / 1048576.0),
            "kernel": platform.release()}


def versions(root):
    v = {"Debian": _read("/etc/debian_version").strip() or "unknown"}
    for label, pkg in PACKAGES:
        v[label] = _dpkg_version(pkg)
    v["python (the agents' interpreter)"] = "/usr/bin/python3 " + sys.version.split()[0]
    sys.path.insert(0, os.path.join(root, "lib"))
    try:
        from vmceph import __version__
    except ImportError:
        __version__ = "unknown"
    rev = ""
    try:
        p = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=10)
        rev = p.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    v["vmceph"] = __version__ + (" (git %s)" % rev if rev else "")
    return v


def other_labs(own_state_dir, state_root="/tmp/vmlab"):
    """Names of other vmlab labs whose state dirs exist (a sign of a busy machine)."""
    try:
        names = sorted(d for d in os.listdir(state_root)
                       if os.path.isfile(os.path.join(state_root, d, "lab.json"))
                       and os.path.join(state_root, d) != own_state_dir)
    except OSError:
        names = []
    return names


def output_options(p, out):
    """A benchmark command's --out, --no-write and --json (bench fencing, bench recovery)."""
    p.add_argument("--out", default=out)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", default=None, help="also write the raw runs here")


def save_json(path, result):
    """The raw runs, when --json asked for them."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=str)


def replay(command, argv):
    """The command line that reproduces a run, quoted as a shell would need it."""
    return "PYTHONPATH=lib:tests /usr/bin/python3 -m bench %s%s" % (
        command, " " + shlex.join(argv) if argv else "")


def _table(header, rows):
    return stats.render_markdown(header, rows)


def previous_analysis(path):
    text = _read(path)
    if ANALYSIS_BEGIN in text and ANALYSIS_END in text:
        return text[text.index(ANALYSIS_BEGIN) + len(ANALYSIS_BEGIN):text.index(ANALYSIS_END)]
    return "\n_(no analysis written yet)_\n"


def previous_fencing(path):
    """The fencing section (bench/fencing.py writes it between its markers; the main run
    does not measure fencing) carried over from the existing file, or ''."""
    from bench.fencing import BEGIN, END
    text = _read(path)
    if BEGIN in text and END in text:
        start = text.rfind("\n## ", 0, text.index(BEGIN))
        return "\n" + text[start + 1 if start >= 0 else text.index(BEGIN):
                           text.index(END) + len(END)] + "\n"
    return ""


MONITOR_CURVE_SVG = "bench-monitor-curve.svg"
START_DISKS_SVG = "bench-start-disks.svg"


def charts(bench):
    """{file name: SVG text} of the cost curves this run measured (written next to the
    report, linked from it)."""
    from bench import svg
    out = {}
    _, points = bench.curve_rows()
    if any(points.values()):
        out[MONITOR_CURVE_SVG] = svg.line_chart(
            "Monitor CPU per node, one monitor per VM every 10 s", "VMs running on the node",
            "% of one core (agent processes)", {who: p for who, p in points.items() if p})
    sl = bench.start_slopes()
    if sl:
        out[START_DISKS_SVG] = svg.line_chart(
            "Start wall time by number of RBD disks (median)", "RBD disks",
            "ms", {who: [(n, w * 1e3) for n, w in sl[who]["points"]] for who in sl})
    return out


def build(bench, prof, ctx):
    """Every section as (title, markdown body); the text report prints the same."""
    sections = []
    rows = [r.cells() for r in bench.rows()]
    sections.append(("Results", _table(stats.HEADER, rows)))
    sl = bench.start_slopes()
    if sl:
        srows = []
        for who in (OURS, VD):
            if who in sl:
                s = sl[who]
                pts = " / ".join("%d: %s" % (n, stats.ms(w, 0)) for n, w in s["points"])
                srows.append([who, pts,
                              "%.1f" % (s["slope"] * 1e3),
                              " / ".join("%.1f" % (x * 1e3) for x in s["segments"]),
                              "%.2f" % (s["cpu_slope"] * 1e3)])
        if OURS in sl and VD in sl:
            srows.append(["vmceph - VirtualDomain", "", "%.1f" % (
                (sl[OURS]["slope"] - sl[VD]["slope"]) * 1e3), "",
                "%.2f" % ((sl[OURS]["cpu_slope"] - sl[VD]["cpu_slope"]) * 1e3)])
        sections.append(("Start cost per extra RBD disk", _table(
            ["agent", "median start wall ms by disks", "slope ms/disk (least squares)",
             "segment slopes ms/disk", "CPU slope ms/disk"], srows)
            + "\n\n![start wall time by disks](%s)" % START_DISKS_SVG))
    crows, _ = bench.curve_rows()
    if crows:
        starts = bench.notes.get("curve_start_s", {})
        sections.append(("Monitor CPU per node by running VMs (measured)", _table(
            ["VMs running", "vmceph CPU per monitor ms", "vmceph % of one core",
             "vmceph + libvirtd", "VirtualDomain CPU per monitor ms",
             "VirtualDomain % of one core", "VirtualDomain + libvirtd",
             "CPU ratio (paired rounds)"], crows)
            + "\n\nEach count is measured with that many one-disk VMs running on node 1 "
              "(started by vmceph's agent; %s); a round monitors every one of them once, as "
              "their recurring monitors (interval 10 s) do in one interval; %d rounds per "
              "agent, alternating. %% of one core = a round's CPU / 10 s. libvirtd's share "
              "is sampled from /proc around each monitor.\n\n![monitor CPU by VMs](%s)"
            % (", ".join("%d more started in %.0f s" % (n, t) for n, t in sorted(
                starts.items())) or "-", bench.plan.curve_rounds, MONITOR_CURVE_SVG)))
    dt = bench.downtime_rows()
    if dt:
        sections.append(("Live migration: guest downtime", _table(
            ["agent", "n", "downtime ms", "directions", "source of the figure"], dt)))
    rec = bench.recovery_rows()
    if rec:
        sections.append(("Recovery after a killed holder", _table(
            ["agent", "n", "start wall ms", "first write ms", "start -> first write ms"], rec)
            + "\n\nQEMU on n2 held the image's exclusive lock and was killed (SIGKILL: its watch "
              "lingers ~30 s); then Pacemaker and corosync were stopped on n2 and n2 was "
              "recorded as fenced (`stonith_admin --confirm n2`, as after a power-off "
              "confirmed by hand; n2's Ceph mon and OSD stay up: the figure is not Ceph's own "
              "recovery); then the agent started the domain on n1 and "
              "the new QEMU wrote 4 KiB (`lab.guest_write`). vmceph "
              "(`blocklist_expire=600`) blocklists the dead client and breaks its lock; "
              "VirtualDomain checks nothing, so the first write waits until librbd times the "
              "dead holder out. Kill -> start: %s s (the same sequence for both agents)."
            % "/".join("%.1f" % x for x in bench.get(("recovery kill->start", OURS))
                       + bench.get(("recovery kill->start", VD)))))
    cpu = bench.cpu_200_rows()
    if cpu:
        sections.append(("CPU for 200 VMs monitored every 10 s on one node", _table(
            ["monitor", "n", "mean CPU per monitor ms", "% of one core (agents)",
             "libvirtd CPU per monitor ms", "% of one core (agents + libvirtd)"], cpu)
            + "\n\n200 monitors / 10 s = 20 agent processes per second. libvirtd's share is "
              "sampled from /proc/PID/stat around each run (10 ms resolution; the mean over "
              "the runs). Ceph daemons' and Pacemaker's own work is not included."))
    tg = bench.targets(prof)
    sections.append(("Targets", _table(stats.TARGET_HEADER, [t.cells() for t in tg])))
    if prof:
        sections.append(("Profiles (measured in the same run)", profile_markdown(prof)))
    return sections


def profile_markdown(prof):
    parts = []
    it = prof.get("importtime") or {}
    if it:
        rows = []
        for label, d in it.items():
            top = ", ".join("%s %.1f" % (n, c / 1000.0) for n, c in d["top"])
            nota = ", ".join("%s %.1f" % (n, c / 1000.0) for n, c in sorted(
                d["notable"].items(), key=lambda kv: -kv[1]))
            rows.append([label, "%.1f" % (d["total_us"] / 1000.0), top, nota])
        parts.append("`python3 -S -X importtime` of vmceph's agent (ms, cumulative):\n\n"
                     + _table(["action", "all imports", "top-level imports", "inside them"],
                              rows))
    for label, ph in (prof.get("phases") or {}).items():
        rows = [[name, "%.1f" % (cum * 1e3), "" if calls is None else str(calls)]
                for name, cum, calls in ph]
        parts.append("`cProfile` of vmceph's %s (cumulative wall ms of the main thread, "
                     "profiler overhead included):\n\n" % label
                     + _table(["phase", "ms", "calls"], rows))
    per = prof.get("checks_per_disk") or {}
    if per:
        rows = [[str(n), " / ".join(stats.ms(v, 1) for v in vals),
                 stats.ms(stats.Summary(vals).median, 1)] for n, vals in sorted(per.items())]
        parts.append("vmceph's checks before libvirt starts the domain (`facts.gather_with`: "
                     "cluster view, Ceph connect + quorum, one inspection per image; cProfile, "
                     "cumulative ms) by number of disks:\n\n"
                     + _table(["disks", "runs", "median"], rows))
    ex = prof.get("execve") or {}
    if ex:
        rows = []
        for (who, label), progs in ex.items():
            rows.append([label, who, str(len(progs)), summarize_programs(progs) or "-"])
        parts.append("Programs each agent runs per action (`strace -f -e trace=execve`, the "
                     "agent itself not counted):\n\n"
                     + _table(["action", "agent", "programs", "which"], rows))
    return "\n\n".join(parts)


def markdown(bench, prof, ctx, analysis):
    m, v = ctx["machine"], ctx["versions"]
    out = ["# Benchmarks: vmceph against VirtualDomain, side by side", "",
           "Generated by `%s` on %s; the whole run took %.1f min (%s). **Rerun**: from a "
           "checkout on Debian 12, as root, `make bench` (the full run; it brings up and tears "
           "down its own lab) or `PYTHONPATH=lib:tests /usr/bin/python3 -m bench --help` for "
           "the options (`--quick`, `--scale`, `--only`)."
           % (ctx["command"], ctx["date"], ctx["elapsed"] / 60.0, ctx["plan"]), ""]
    if ctx.get("busy"):
        out += ["> **Measured on a busy machine**: %s. Absolute figures are noisy; the pairs "
                "(each vmceph run next to a VirtualDomain run) keep the ratios meaningful." %
                ctx["busy"], ""]
    out += ["## Machine and versions", "",
            _table(["", ""], [[k, v_] for k, v_ in list(m.items()) + list(v.items())]), ""]
    out += ["## Method", "", METHOD.strip(), "", "- " + ctx["verified"] + ".",
            "- Repetitions: %s." % ctx["plan"]]
    if bench.skipped:
        out.append("- Sections skipped in this run: %s." % ", ".join(bench.skipped))
    out.append("")
    for title, body in build(bench, prof, ctx):
        out += ["## " + title, "", body, ""]
    out += ["## Where the time goes", "",
            ANALYSIS_BEGIN + "\n" + analysis.strip("\n") + "\n" + ANALYSIS_END, ""]
    return "\n".join(out)


METHOD = """
- The lab (`tests/vmlab`): 3 nodes in network/mount/UTS namespaces on this one machine, each a
  Ceph mon + bluestore OSD, libvirtd + QEMU (TCG, OS-less 64 MiB guests), corosync +
  Pacemaker (real membership and attrd, no resources configured); one ceph-mgr on n1.
  CephHealth runs (started by the harness) on every node, publishing `#health-ceph` and the
  nodes' Ceph client addresses, as the clone would.
- Each action is one process, run the way pacemaker-execd runs an agent: the agent's path
  with the action as argument and `OCF_*` variables (instance, type, provider,
  `OCF_RESKEY_*` parameters, `CRM_meta_timeout/interval/on_node`, `OCF_CHECK_LEVEL`), inside
  the node (`nsenter -t <node init> -m -n -u`), from a clean environment.
- Both agents get the same parameters: `config`, `hypervisor=qemu:///system`,
  `force_stop=true`, `migration_transport=tcp`, the Ceph user and keyring (VirtualDomain
  ignores them), `autoset_utilization_*=false` (the resources are not in the CIB; with
  VirtualDomain's defaults its monitor would also run `virsh dominfo` x3 and `crm_resource`).
- Wall time: spawn to reap. CPU: user + system of the whole process tree from `os.wait4`
  (the agent and every program it ran and waited for; not the daemons working for it).
  Peak RSS: the largest resident set of any single process of the tree, from GNU time's
  `%M` (its own `wait4`): a child spawned directly from the Python harness would inherit
  the harness's ~22 MiB high-water mark at exec.
- Pairs: each vmceph run is next to a VirtualDomain run on the same domain, in alternating
  order (A B, B A, ...); a ratio is the median of the per-pair ratios. The floors run in
  the same rounds as the depth-0 monitors. One unmeasured warm-up run precedes each series.
- Domains: `bm-mon` (2 RBD disks, running on n1: monitors), `bm-probe` (1 disk, never
  started: probes), `bm-ss1/4/16` (start + stop on n1), `bm-mig` (2 disks, live-migrated
  n1 <-> n2, each agent in both directions, the guest writing after each move so the lock
  follows), `bm-rec` (1 disk: recovery), `bm-c01`..`bm-c50` (1 disk each, running together
  on n1: the monitor curve).
"""


def text_report(bench, prof, ctx):
    lines = ["", "vmceph vs VirtualDomain (%s, %s)" % (ctx["date"], ctx["plan"]), ""]
    rows = [r.cells() for r in bench.rows()]
    lines += [stats.render_text(stats.HEADER, rows), ""]
    sl = bench.start_slopes()
    for who in (OURS, VD):
        if who in sl:
            lines.append("start slope %s: %.1f ms/disk (segments %s)" % (
                who, sl[who]["slope"] * 1e3,
                " / ".join("%.1f" % (x * 1e3) for x in sl[who]["segments"])))
    dt = bench.downtime_rows()
    if dt:
        lines += ["", stats.render_text(["agent", "n", "downtime ms", "directions", "source"], dt)]
    rec = bench.recovery_rows()
    if rec:
        lines += ["", stats.render_text(["agent", "n", "start ms", "first write ms",
                                         "start->write ms"], rec)]
    cpu = bench.cpu_200_rows()
    if cpu:
        lines += ["", stats.render_text(["200 VMs / 10 s", "n", "CPU ms/monitor", "% core",
                                         "libvirtd ms", "% core incl. libvirtd"], cpu)]
    crows, _ = bench.curve_rows()
    if crows:
        lines += ["", stats.render_text(["VMs", "vmceph ms/monitor", "% core", "+ libvirtd",
                                         "VD ms/monitor", "% core", "+ libvirtd", "ratio"],
                                        crows)]
    lines += ["", stats.render_text(stats.TARGET_HEADER,
                                    [t.cells() for t in bench.targets(prof)])]
    return "\n".join(lines)


def now():
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
