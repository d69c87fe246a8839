"""Where the time goes: profiles taken in the same lab after the measurements.

- ``python3 -X importtime`` of vmceph's monitor, probe and start: which imports cost what;
- ``cProfile`` of vmceph's start (4 disks) and migrate_to: time per phase (cumulative,
  wall clock, including waits for subprocesses, Ceph and libvirt);
- ``strace -f -e trace=execve``: how many programs each agent runs per action.
These runs are slower than unprofiled ones (the profilers' overhead); they show shares,
the table shows costs.
"""

import os
import re

from bench.scenarios import OURS, VD, OCF_NOT_RUNNING, OCF_SUCCESS

PY = ["/usr/bin/python3", "-S"]


def parse_importtime(text):
    """[(module, self_us, cumulative_us, depth)] from ``-X importtime`` output."""
    out = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
    return out


def top_level_imports(entries, min_us=500):
    """Top-level imports (depth 0) sorted by cumulative time, and the total."""
    top = [(name, cum) for name, _, cum, depth in entries if depth == 0]
    total = sum(c for _, c in top)
    return sorted([t for t in top if t[1] >= min_us], key=lambda t: -t[1]), total


def notable(entries, names):
    """{name: cumulative_us} of given modules wherever they appear (first occurrence)."""
    found = {}
    for name, _, cum, _ in entries:
        if name in names and name not in found:
            found[name] = cum
    return found


START_PHASES = [
    ("validate (all parameters; imports rados, rbd, libvirt, lxml; parses the XML)",
     "rbdvd.py", "validate"),
    ("cluster view: crm_mon + cibadmin", "facts.py", "cluster_view"),
    ("Ceph connect", "ceph.py", "connect"),
    ("Ceph quorum_status", "ceph.py", "quorum"),
    ("inspect images (open read-only, lockers, watchers)", "rbdimages.py", "inspect"),
    ("owners map (addresses, name resolution)", "cluster.py", "owners_map"),
    ("Ceph session close", "ceph.py", "close"),
    ("libvirt: state + createXML (QEMU starts)", "virt.py", "create"),
    ("the whole action (ocf.run)", "ocf.py", "run"),
]
MIGRATE_PHASES = [
    ("validate", "rbdvd.py", "validate"),
    ("facts (cluster view, Ceph, images)", "facts.py", "gather_with"),
    ("target's #health-ceph (attrd_updater)", "migration.py", "node_health"),
    ("live migration (migrateToURI3 + polling)", "virt.py", "migrate"),
    ("the whole action (ocf.run)", "ocf.py", "run"),
]


def phases(prof_path, wanted):
    """[(label, cumulative seconds, calls)] from a cProfile dump."""
    import pstats
    st = pstats.Stats(prof_path)
    out = []
    for label, fname, func in wanted:
        cum, calls = 0.0, 0
        for (f, _line, name), (cc, nc, tt, ct, callers) in st.stats.items():
            if f.endswith("/" + fname) and name == func:
                cum += ct
                calls += nc
        out.append((label, cum, calls))
    imports = 0.0
    for (f, _line, name), (cc, nc, tt, ct, callers) in st.stats.items():
        if name == "_find_and_load" and "importlib._bootstrap" in f:
            imports = max(imports, ct)
    out.append(("imports (cumulative, all)", imports, None))
    return out


def parse_execve(text):
    """Program basenames of successful execve calls in an strace -f output."""
    progs = []
    for line in text.splitlines():
        m = re.search(r'execve\("([^"]+)"', line)
        if m and "= -1" not in line:
            progs.append(os.path.basename(m.group(1)))
    return progs


def profile_all(bench):
    """Run the profiles; returns a dict for the report."""
    out = {"importtime": {}, "phases": {}, "execve": {}}
    work = bench.runner.workdir
    mon, probe = bench.domains["bm-mon"], bench.domains["bm-probe"]
    ss = bench.domains.get("bm-ss4") or bench.domains["bm-ss%d" % bench.plan.disks[0]]
    if not bench.running_on(mon):
        bench.agent(OURS, mon, 1, "start")
    # import times
    for label, dom, action, kw, expect in (
            ("monitor, depth 0", mon, "monitor", {"interval_ms": 10000}, (OCF_SUCCESS,)),
            ("probe (stopped)", probe, "monitor", {}, (OCF_NOT_RUNNING,)),
            ("start, %d disks" % len(ss.images), ss, "start", {}, (OCF_SUCCESS,))):
        m = bench.agent(OURS, dom, 1, action, expect=expect,
                        prefix=PY + ["-X", "importtime"], **kw)
        entries = parse_importtime(m.stderr)
        top, total = top_level_imports(entries)
        out["importtime"][label] = {
            "total_us": total, "top": top[:8], "cpu": m.cpu, "wall": m.wall,
            "notable": notable(entries, ("libvirtmod", "typing", "threading", "lxml.etree",
                                         "dataclasses", "inspect", "rados", "rbd",
                                         "subprocess", "socket", "vmceph.safety", "json"))}
        if action == "start":
            bench.agent(OURS, dom, 1, "stop")
    # phases of start and migrate_to
    prof = os.path.join(work, "start.prof")
    bench.agent(OURS, ss, 1, "start", prefix=PY + ["-m", "cProfile", "-o", prof])
    out["phases"]["start, %d disks" % len(ss.images)] = phases(prof, START_PHASES)
    bench.agent(OURS, ss, 1, "stop")
    # vmceph's own work per disk: its facts gathering (Ceph connect, quorum, one inspection
    # per image, cluster view) at each disk count, apart from QEMU's own per-disk cost
    out["checks_per_disk"] = {}
    for n in bench.plan.disks:
        dom = bench.domains["bm-ss%d" % n]
        for _ in range(2):
            bench.agent(OURS, dom, 1, "start", prefix=PY + ["-m", "cProfile", "-o", prof])
            gathered = [cum for label, cum, _ in phases(prof, [("g", "facts.py", "gather_with")])
                        if label == "g"]
            out["checks_per_disk"].setdefault(n, []).append(gathered[0])
            bench.agent(OURS, dom, 1, "stop")
    mig = bench.domains["bm-mig"]
    bench.destroy_everywhere(mig)
    bench.agent(OURS, mig, 1, "start")
    prof = os.path.join(work, "migrate.prof")
    meta = {"migrate_source": bench.lab.node_name(1), "migrate_target": bench.lab.node_name(2)}
    bench.agent(OURS, mig, 1, "migrate_to", meta=meta,
                prefix=PY + ["-m", "cProfile", "-o", prof])
    out["phases"]["migrate_to"] = phases(prof, MIGRATE_PHASES)
    bench.agent(OURS, mig, 2, "migrate_from", meta=meta)
    bench.agent(OURS, mig, 1, "stop")
    bench.agent(OURS, mig, 2, "stop")
    # programs run per action
    trace = os.path.join(work, "execve.trace")
    strace = ["strace", "-f", "-qq", "-e", "trace=execve", "-o", trace]
    if bench.lab.run(1, ["which", "strace"], check=False).returncode != 0:
        return out
    for who in (OURS, VD):
        for label, dom, action, kw, expect in (
                ("monitor", mon, "monitor", {"interval_ms": 10000}, (OCF_SUCCESS,)),
                ("probe", probe, "monitor", {}, (OCF_NOT_RUNNING,)),
                ("start", ss, "start", {}, (OCF_SUCCESS,)),
                ("stop", ss, "stop", {}, (OCF_SUCCESS,))):
            bench.agent(who, dom, 1, action, expect=expect, prefix=strace, **kw)
            with open(trace, errors="replace") as f:
                progs = parse_execve(f.read())
            # the first exec is the agent itself
            out["execve"][(who, label)] = progs[1:]
    return out


def summarize_programs(progs):
    """'virsh x2, sed, tr x3' from a list of program names."""
    counts = {}
    for p in progs:
        counts[p] = counts.get(p, 0) + 1
    return ", ".join("%s x%d" % (p, n) if n > 1 else p
                     for p, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
