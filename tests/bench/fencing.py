"""make bench, fencing section: how fast fence_vmceph fences a node and a VM writes again.

    PYTHONPATH=lib:tests /usr/bin/python3 -m bench fencing [--crashes 5] [--partitions 5]
        [--leader-crashes 3] [--ceph-conf "mon election timeout=1, ..."] [--no-write]
    PYTHONPATH=lib:tests /usr/bin/python3 -m bench fencing --ceph-only [--runs 3]
        [--ceph-conf ...]

Default mode: a three-node lab with Pacemaker configured from cib-examples/pcs.sh (as the
end-to-end tests do), ``mon lease = 2`` (cib-examples/README.md), fence_vmceph at level 1
(``provides=unfencing``) and each node's power device at level 2. Each run fails one node
that holds a VM (a crash: every process of the node killed; a partition: its switch port
down) and measures, from the failure:

- **fenced**: the fencer's ``Operation 'off' targeting NODE ... OK`` line (pacemaker.log of
  the survivors, ms resolution; the fencing history has whole seconds only);
- **VM writing**: every VM of the victim has written 4 KiB through its new QEMU on a
  survivor (polled every ~0.25 s: virsh list, then the lab's guest_write);
- **where the time goes**, from the survivors' logs: the node ``lost`` by corosync
  (membership), fencing ``requested`` by the controller, the surviving monitors' ``election``
  called and the ``new leader`` (ceph-mon.log).

Crashes hit a node whose monitor is not the leader, then (``--leader-crashes``) the
leader's node; partitions hit a non-leader. The victim comes back between runs (booted,
Pacemaker unfences it by itself, green again). The invariant checker samples all along; a
violation is reported, not hidden.

``--ceph-only``: no Pacemaker. A lab of Ceph and libvirt only; a node is crashed and, after
``--fence-delay`` seconds (the corosync token + consensus + scheduling delay measured in the
default mode), ``fence_vmceph -o off`` runs on a survivor. This isolates what the monitors
cost (lease, election) for a ``--ceph-conf`` variant in a few minutes per variant.

The figures are written into docs/benchmarks.md between the fencing markers (kept by the
main ``make bench``, which does not run this section).
"""

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(ROOT, "agents", "fence", "fence_vmceph")
KEYRING = "/etc/ceph/ceph.client.fence.keyring"
CAPS = ["mon", 'allow r, allow command "osd blocklist", allow command "osd blocklist ls", '
        'allow command "osd down", allow command "config-key set", '
        'allow command "config-key get", allow command "config-key rm", '
        'allow command sessions', "osd", "allow *"]
BEGIN = "<!-- fencing:begin -->"
END = "<!-- fencing:end -->"


def log(msg):
    print("[bench fencing %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr,
          flush=True)


def parse_conf(text):
    """'mon election timeout=1, mon lease=2' -> {"mon election timeout": "1", ...}"""
    out = {}
    for part in (text or "").split(","):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    return out


# ------------------------------------------------------------------ log timestamps
_PCMK = re.compile(r"^(\w{3} \d{2} \d{2}:\d{2}:\d{2}\.\d{3}) ")
_CEPH = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})([+-]\d{4}) ")


def pcmk_epoch(line, year=None):
    """Epoch of a pacemaker.log line ('Dec 01 18:54:39.008 node1 ...', local time), or
    None."""
    m = _PCMK.match(line)
    if not m:
        return None
    year = year or time.localtime().tm_year
    t = datetime.datetime.strptime("%d %s" % (year, m.group(1)), "%Y %b %d %H:%M:%S.%f")
    return time.mktime(t.timetuple()) + t.microsecond / 1e6


def ceph_epoch(line):
    """Epoch of a Ceph daemon log line ('2026-12-01T18:54:34.104+0000 ...'), or None."""
    m = _CEPH.match(line)
    if not m:
        return None
    t = datetime.datetime.strptime(m.group(1) + m.group(2), "%Y-%m-%dT%H:%M:%S.%f%z")
    return t.timestamp()


def first_after(lines, since, pattern, stamp):
    """Epoch of the first line at or after ``since`` matching ``pattern``, or None."""
    rx = re.compile(pattern)
    for line in lines:
        t = stamp(line)
        if t is not None and t >= since - 0.001 and rx.search(line):
            return t
    return None


def read_tail(path, offset):
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return f.read().splitlines()
    except OSError:
        return []


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class Logs:
    """pacemaker.log and ceph-mon.log of every node, from a mark on."""

    def __init__(self, lab):
        self.lab = lab
        self.marks = {}

    def files(self, i):
        name = self.lab.node_name(i)
        return {"pcmk": self.lab.node_dir(i, "log-pacemaker", "pacemaker.log"),
                "mon": self.lab.node_dir(i, "log-ceph", "ceph-mon.%s.log" % name)}

    def mark(self):
        self.marks = {(i, k): size(p) for i in self.lab.indexes
                      for k, p in self.files(i).items()}

    def lines(self, nodes, kind):
        out = []
        for i in nodes:
            out += read_tail(self.files(i)[kind], self.marks.get((i, kind), 0))
        return out

    def timeline(self, victim, survivors, since):
        """{event: seconds after ``since``} (None when not seen)."""
        name = self.lab.node_name(victim)
        pcmk = self.lines(survivors, "pcmk")
        mons = self.lines(survivors, "mon")
        ev = {
            "lost": first_after(pcmk, since, r"Node %s state is now lost" % name, pcmk_epoch),
            "requested": first_after(pcmk, since, r"Requesting fencing \(\w+\) (of node|"
                                     r"targeting) %s\b" % name, pcmk_epoch),
            "fenced": first_after(pcmk, since, r"Operation '\w+' targeting %s (by|on) \S+ "
                                  r"for \S+: OK" % name, pcmk_epoch),
            "election": first_after(mons, since, r"calling monitor election", ceph_epoch),
            "new leader": first_after(mons, since, r"is new leader", ceph_epoch),
        }
        return {k: (None if v is None else round(v - since, 2)) for k, v in ev.items()}


# ------------------------------------------------------------------ fence_vmceph in the lab
def install_agent(lab):
    """The checkout's agent in every node's /usr/sbin (the lab's overlay) and the
    client.fence user with the caps docs/fencing.md lists."""
    link = lab.path("sbin", "fence_vmceph")
    if not os.path.lexists(link):
        os.symlink(os.path.realpath(AGENT), link)
    lab.run(1, ["ceph", "auth", "get-or-create", "client.fence", *CAPS], timeout=60)
    for i in lab.indexes:
        lab.run(i, ["sh", "-c", "ceph auth get client.fence > %s" % KEYRING], timeout=60)


def pcs(lab, *args, timeout=120):
    return lab.run(lab.first_alive(), ["pcs", *args], timeout=timeout)


def add_device(lab):
    pcs(lab, "stonith", "create", "fence-ceph", "fence_vmceph", "ceph_user=fence",
        "ceph_keyring=" + KEYRING, "pcmk_host_list=" + " ".join(
            lab.node_name(i) for i in lab.indexes),
        "pcmk_host_check=static-list", "op", "monitor", "interval=60s",
        "meta", "allow-unhealthy-nodes=true", "provides=unfencing")
    pcs(lab, "stonith", "level", "clear")
    for i in lab.indexes:
        n = lab.node_name(i)
        pcs(lab, "stonith", "level", "add", "1", n, "fence-ceph")
        pcs(lab, "stonith", "level", "add", "2", n, "fence-vmlab-" + n)


def apply_mon_settings(lab, extra):
    """The lab restores mon_election_timeout to 5 s at run time once it is up (its first
    election runs with 1 s): inject every mon_* setting of ``extra`` into the running
    monitors again, so they run what ceph.conf says (a rebooted node's mon reads it)."""
    args = ["--%s=%s" % (k.strip().replace(" ", "_"), v) for k, v in extra.items()
            if k.strip().startswith("mon")]
    if args:
        lab.incluster(1, "inject", mons=[name for name, _ in lab.node_list()], args=args)


def leader(lab):
    q = json.loads(lab.ceph(lab.first_alive(), "quorum_status", "-f", "json"))
    return q["quorum_leader_name"]


def wait_writing(lab, nodes, vms, t0, timeout, what):
    """{vm: seconds from t0} once every VM has written 4 KiB through a running QEMU on one
    of ``nodes`` (virsh list, then lab.guest_write, every ~0.2 s); RuntimeError after
    ``timeout`` s from t0."""
    writing = {}
    while len(writing) < len(vms):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("%s: VMs not all writing after %d s (%s)"
                               % (what, timeout, writing))
        for i in nodes:
            out = lab.run(i, ["virsh", "-c", "qemu:///system", "list", "--name",
                              "--state-running"], timeout=15, check=False).stdout.split()
            for vm in set(out) & set(vms) - set(writing):
                try:
                    lab.guest_write(i, vm)
                    writing[vm] = round(time.monotonic() - t0, 2)
                except Exception:  # noqa: BLE001 - not yet: try again next round
                    pass
        time.sleep(0.2)
    return writing


# ------------------------------------------------------------------ Pacemaker mode
class PacemakerFencing:
    def __init__(self, lab, cfg, story, checker):
        self.lab, self.cfg, self.story, self.checker = lab, cfg, story, checker
        self.logs = Logs(lab)
        self.runs = []

    def victim(self, want_leader):
        """A node with a VM whose mon is (not) the leader; a VM is moved there if needed."""
        lab, story = self.lab, self.story
        lead = leader(lab)
        nodes = [i for i in lab.indexes if (lab.node_name(i) == lead) == want_leader]
        where = story.where()
        for i in nodes:
            if any(n and n[0] == lab.node_name(i) for n in where.values()):
                return i
        vm = sorted(where)[0]
        story.live_migrate(vm, lab.node_name(nodes[0]))   # a node name, not an index
        return nodes[0]

    def one(self, kind, want_leader, timeout=150):
        lab, story, checker = self.lab, self.story, self.checker
        story.settle()
        victim = self.victim(want_leader)
        story.settle()
        name = lab.node_name(victim)
        lead = leader(lab)
        vms = [vm for vm, nodes in story.where().items() if name in nodes]
        survivors = [i for i in lab.indexes if i != victim]
        checker.move_off(victim)
        mark = len(checker.violations)
        self.logs.mark()
        t0, w0 = time.monotonic(), time.time()
        if kind == "crash":
            lab.crash(victim)
        else:
            lab.partition(victim)
        writing = wait_writing(lab, survivors, vms, t0, timeout, "%s of %s" % (kind, name))
        deadline = time.monotonic() + 60
        while True:
            tl = self.logs.timeline(victim, survivors, w0)
            if tl["fenced"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        checker.wait_samples(2)
        run = {"kind": kind, "victim": name, "leader": lead, "victim_is_leader": name == lead,
               "vms": vms, "writing": writing, "vm_writing_s": max(writing.values()),
               "fenced_s": tl["fenced"], "timeline": tl,
               "blocklisted": "%s:0/0" % lab.node_ip(victim) in lab.ceph(
                   survivors[0], "osd", "blocklist", "ls"),
               "violations": [repr(v) for v in checker.since(mark)]}
        log("%s of %s%s: fenced %s s, VMs writing %s s, timeline %s%s"
            % (kind, name, " (mon leader)" if run["victim_is_leader"] else "", tl["fenced"],
               run["vm_writing_s"], tl, " VIOLATIONS %s" % run["violations"]
               if run["violations"] else ""))
        self.runs.append(run)
        self.back(victim, kind)
        return run

    def back(self, victim, kind):
        """The victim boots again; Pacemaker unfences it (provides=unfencing)."""
        lab = self.lab
        if kind != "crash":
            lab.crash(victim)   # the fenced node was left running: power it off first
        r = self.story.rejoin(victim, heal=kind != "crash")
        ip = lab.node_ip(victim)
        deadline = time.monotonic() + 60
        while "%s:0/0" % ip in lab.ceph(lab.first_alive(), "osd", "blocklist", "ls"):
            if time.monotonic() > deadline:
                raise RuntimeError("%s still blocklisted after its rejoin" % r["node"])
            time.sleep(1)


def run_pacemaker(args):
    from vmlab import Lab
    from vmlab.cluster_config import configure
    from vmlab.invariants import InvariantChecker
    from vmlab.story import Story
    extra = {"mon lease": 2}
    extra.update(parse_conf(args.ceph_conf))
    lab = Lab(name=args.lab_name, nodes=3, pacemaker=True, node_prefix="node", token_ms=1000,
              project_root=ROOT, ceph_conf_extra=extra, verbose=False)
    if lab.is_up():
        raise SystemExit("lab %r is up already" % args.lab_name)
    t_start = time.monotonic()
    checker = None
    try:
        log("bringing up lab %r (Ceph %s)" % (args.lab_name, extra))
        lab.up()
        apply_mon_settings(lab, extra)
        cfg = configure(lab)
        install_agent(lab)
        add_device(lab)
        checker = InvariantChecker(lab, cfg.vms).start()
        story = Story(lab, cfg, checker, say=lambda *_: None)
        bench = PacemakerFencing(lab, cfg, story, checker)
        log("lab up and configured in %.0f s" % (time.monotonic() - t_start))
        plan = ([("crash", False)] * args.crashes + [("partition", False)] * args.partitions
                + [("crash", True)] * args.leader_crashes)
        for kind, want_leader in plan:
            try:
                bench.one(kind, want_leader)
            except Exception as e:  # noqa: BLE001 - one failed run is reported, not fatal
                log("%s run failed: %r" % (kind, e))
                bench.runs.append({"kind": kind, "victim_is_leader": want_leader,
                                   "error": repr(e)[:300]})
        return {"mode": "pacemaker", "ceph_conf": extra, "runs": bench.runs, "date": now(),
                "checker": checker.report(), "minutes": (time.monotonic() - t_start) / 60}
    finally:
        if checker is not None:
            checker.stop()
        lab.down()


# ------------------------------------------------------------------ Ceph-only mode
def run_ceph_only(args):
    from vmlab import Lab
    extra = {"mon lease": 2}
    extra.update(parse_conf(args.ceph_conf))
    lab = Lab(name=args.lab_name, nodes=3, pacemaker=False, node_prefix="node",
              project_root=ROOT, ceph_conf_extra=extra, verbose=False)
    if lab.is_up():
        raise SystemExit("lab %r is up already" % args.lab_name)
    t_start = time.monotonic()
    runs = []
    try:
        log("bringing up lab %r without Pacemaker (Ceph %s)" % (args.lab_name, extra))
        lab.up()
        apply_mon_settings(lab, extra)
        install_agent(lab)
        addrs = " ".join("%s=%s" % (lab.node_name(i), lab.node_ip(i)) for i in lab.indexes)
        logs = Logs(lab)
        for k in range(args.runs):
            for want_leader in (False, True):
                lab.wait_quorum(3, timeout=120)
                lab.wait_ceph_healthy(timeout=180)
                time.sleep(3)   # a few lease rounds in the steady state
                lead = leader(lab)
                victim = next(i for i in lab.indexes
                              if (lab.node_name(i) == lead) == want_leader)
                name = lab.node_name(victim)
                fencer = next(i for i in lab.indexes if i != victim)
                logs.mark()
                w0 = time.time()
                t0 = time.monotonic()
                lab.crash(victim)
                time.sleep(max(0.0, args.fence_delay - (time.monotonic() - t0)))
                t_start_fence = time.monotonic() - t0
                p = lab.run(fencer, [AGENT, "-o", "off", "-n", name, "--ceph-user=fence",
                                     "--ceph-keyring=" + KEYRING, "--node-addresses=" + addrs,
                                     "--ceph-timeout=60"], timeout=90, check=False)
                off_s = time.monotonic() - t0
                tl = logs.timeline(victim, [i for i in lab.indexes if i != victim], w0)
                run = {"victim": name, "victim_is_leader": want_leader, "leader": lead,
                       "rc": p.returncode, "fence_started_s": round(t_start_fence, 2),
                       "fenced_s": round(off_s, 2), "election": tl["election"],
                       "new leader": tl["new leader"]}
                if p.returncode != 0:
                    run["error"] = (p.stdout + p.stderr)[-300:]
                log("ceph-only %d: crash of %s%s: off returned %s after %.2f s; election "
                    "%s s, new leader %s s" % (k, name, " (leader)" if want_leader else "",
                                               p.returncode, off_s, tl["election"],
                                               tl["new leader"]))
                runs.append(run)
                lab.start_node(victim)
                lab.wait_quorum(3, timeout=120)
                lab.run(fencer, [AGENT, "-o", "on", "-n", name, "--ceph-user=fence",
                                 "--ceph-keyring=" + KEYRING, "--node-addresses=" + addrs],
                        timeout=90)
        return {"mode": "ceph-only", "ceph_conf": extra, "fence_delay": args.fence_delay,
                "date": now(),
                "runs": runs, "minutes": (time.monotonic() - t_start) / 60}
    finally:
        lab.down()


# ------------------------------------------------------------------ the report
def now():
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def cell(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    return "%.1f (%.1f-%.1f, n=%d)" % (statistics.median(vals), min(vals), max(vals),
                                        len(vals))


def groups(result):
    out = {}
    for r in result["runs"]:
        if result["mode"] == "pacemaker":
            key = "%s, %s" % (r["kind"], "mon leader's node" if r["victim_is_leader"]
                              else "non-leader node")
        else:
            key = "crash, %s" % ("mon leader's node" if r["victim_is_leader"]
                                 else "non-leader node")
        out.setdefault(key, []).append(r)
    return out


def markdown(result, command):
    conf = ", ".join("`%s = %s`" % kv for kv in result["ceph_conf"].items())
    lines = []
    if result["mode"] == "pacemaker":
        lines += ["Generated by `%s` on %s (%.1f min); Ceph %s. fence_vmceph at level 1 "
                  "(`provides=unfencing`), power at level 2; corosync token 1000 ms. Cells: "
                  "median (min-max, n), seconds from the failure." %
                  (command, result.get("date") or now(), result["minutes"], conf), "",
                  "| failure | fenced | VM writing on a survivor | corosync lost the node | "
                  "fencing requested | monitor election called | new monitor leader | "
                  "failed runs |", "|---|---|---|---|---|---|---|---|"]
        for key, runs in groups(result).items():
            ok = [r for r in runs if "error" not in r]
            tl = [r["timeline"] for r in ok]
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
                key, cell([r["fenced_s"] for r in ok]), cell([r["vm_writing_s"] for r in ok]),
                cell([t["lost"] for t in tl]), cell([t["requested"] for t in tl]),
                cell([t["election"] for t in tl]), cell([t["new leader"] for t in tl]),
                len(runs) - len(ok)))
        bad = [v for r in result["runs"] for v in r.get("violations", [])]
        lines += ["", "Invariant checker: %s; violations: %s." % (
            result.get("checker"), "; ".join(bad) if bad else "none")]
        errors = [r["error"] for r in result["runs"] if "error" in r]
        if errors:
            lines += ["", "Failed runs: " + "; ".join(errors)]
    else:
        lines += ["Generated by `%s` on %s (%.1f min); Ceph %s; no Pacemaker: fence_vmceph "
                  "`off` started %.1f s after the crash. Cells: median (min-max, n), seconds "
                  "from the crash." % (command, result.get("date") or now(),
                                       result["minutes"], conf, result["fence_delay"]), "",
                  "| crash of | off returned | monitor election called | new monitor leader "
                  "| failed |", "|---|---|---|---|---|"]
        for key, runs in groups(result).items():
            ok = [r for r in runs if r.get("rc") == 0]
            lines.append("| %s | %s | %s | %s | %d |" % (
                key, cell([r["fenced_s"] for r in ok]), cell([r["election"] for r in ok]),
                cell([r["new leader"] for r in ok]), len(runs) - len(ok)))
    return "\n".join(lines) + "\n"


def write_section(path, title, body):
    """Put ``body`` under ``### title`` inside the fencing markers of ``path`` (added at
    the end when missing); a section of the same title is replaced, others are kept."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n## Fencing through Ceph (fence_vmceph)\n\n%s\n%s\n" \
            % (BEGIN, END)
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    parts = re.split(r"(?m)^### ", block)
    kept = [p for p in parts[1:] if not p.startswith(title + "\n")]
    new = "\n" + "".join("### " + p for p in kept + ["%s\n\n%s\n" % (title, body)])
    with open(path + ".tmp", "w") as f:
        f.write(head + BEGIN + new + END + tail)
    os.replace(path + ".tmp", path)


def parse(argv):
    p = argparse.ArgumentParser(prog="python3 -m bench fencing",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--crashes", type=int, default=5, help="crashes of a non-leader node")
    p.add_argument("--partitions", type=int, default=5, help="partitions of a non-leader")
    p.add_argument("--leader-crashes", type=int, default=3,
                   help="crashes of the monitor leader's node")
    p.add_argument("--ceph-only", action="store_true",
                   help="no Pacemaker: crash, then fence_vmceph off after --fence-delay")
    p.add_argument("--runs", type=int, default=3,
                   help="--ceph-only: crashes per victim kind (non-leader, leader)")
    p.add_argument("--fence-delay", type=float, default=2.5,
                   help="--ceph-only: seconds between the crash and fence_vmceph off")
    p.add_argument("--ceph-conf", default="",
                   help="extra ceph.conf settings, 'name=value, name=value'")
    p.add_argument("--label", default=None, help="title of the section written")
    p.add_argument("--lab-name", default="fence")
    from bench import report
    report.output_options(p, os.path.join(ROOT, "docs", "benchmarks.md"))
    return p.parse_args(argv)


def main(argv):
    args = parse(argv)
    if os.geteuid() != 0:
        print("the fencing benchmark needs root (the lab)", file=sys.stderr)
        return 2
    result = run_ceph_only(args) if args.ceph_only else run_pacemaker(args)
    from bench import report
    body = markdown(result, report.replay("fencing", argv))
    print(body)
    report.save_json(args.json, result)
    if not args.no_write:
        title = args.label or ("Pacemaker, fence_vmceph at level 1" if not args.ceph_only
                               else "Monitors only (no Pacemaker)") + (
            ": " + args.ceph_conf if args.ceph_conf else ": mon lease 2")
        write_section(args.out, title, body)
        log("wrote %s" % args.out)
    return 0
