"""make bench: vmceph's agents against ocf:heartbeat:VirtualDomain on the lab.

    PYTHONPATH=lib:tests /usr/bin/python3 -m bench [--quick] [--scale X] [--only SECTIONS]
        [--no-profile] [--out docs/benchmarks.md | --no-write] [--keep-lab | --reuse-lab]
    PYTHONPATH=lib:tests /usr/bin/python3 -m bench fencing --help    (bench/fencing.py)
    PYTHONPATH=lib:tests /usr/bin/python3 -m bench recovery --help   (bench/recovery.py)

Brings up the lab "bench" (3 nodes, Pacemaker), measures, prints the table, writes
docs/benchmarks.md and tears the lab down (also on failure or Ctrl-C). Needs root, Debian 12
and the packages of `make deps`; GNU time (package `time`) for peak memory, strace for the
program counts of the profile section.
"""

import argparse
import os
import signal
import sys
import time

from bench import report
from bench.profile import profile_all
from bench.runner import NodeRunner
from bench.scenarios import Bench, Plan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = ("monitor", "probe", "deep", "cephhealth", "startstop", "migrate", "recovery",
            "curve")


def parse(argv):
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="few repetitions (development; ~3 min); the default is the full run")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every repetition count (recovery excepted) by this")
    p.add_argument("--only", default=None,
                   help="comma-separated sections: " + ",".join(SECTIONS))
    p.add_argument("--no-profile", action="store_true", help="skip the profile section")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--no-write", action="store_true", help="print only, write no file")
    p.add_argument("--lab-name", default="bench")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--reuse-lab", action="store_true",
                   help="use a lab of that name that is already up (development)")
    return p.parse_args(argv)


def plan_from(args):
    plan = Plan.quick() if args.quick else Plan()
    if args.scale != 1.0:
        for k in ("monitor", "deep", "probe", "startstop", "migrate", "cephhealth"):
            setattr(plan, k, max(1, int(round(getattr(plan, k) * args.scale))))
    return plan


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def _interrupt(signum, frame):
    """SIGTERM (a CI timeout, a kill) tears the lab down as Ctrl-C does."""
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fencing"]:
        # its own lab (configured from cib-examples) and its own section of the report
        from bench import fencing
        return fencing.main(argv[1:])
    if argv[:1] == ["recovery"]:
        # the recovery curve: its own lab with many VMs, its own section of the report
        from bench import recovery
        return recovery.main(argv[1:])
    args = parse(argv)
    if os.geteuid() != 0:
        print("make bench needs root (the lab: namespaces, bridges)", file=sys.stderr)
        return 2
    only = None
    if args.only:
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = only - set(SECTIONS)
        if unknown:
            print("unknown sections: %s" % ", ".join(sorted(unknown)), file=sys.stderr)
            return 2
    plan = plan_from(args)
    from vmlab import Lab
    signal.signal(signal.SIGTERM, _interrupt)
    t_start = time.monotonic()
    load_before = os.getloadavg()
    if args.reuse_lab:
        lab = Lab.attach(args.lab_name, verbose=False)
    else:
        lab = Lab(name=args.lab_name, nodes=3, pacemaker=True, project_root=ROOT,
                  verbose=False)
        if lab.is_up():
            print("a lab named %r is up already: tear it down (cd tests && /usr/bin/python3 -m "
                  "vmlab --name %s down) or pass --reuse-lab" % (args.lab_name, args.lab_name),
                  file=sys.stderr)
            return 2
        log("bringing up lab %r (3 nodes, Ceph, libvirt, Pacemaker)" % args.lab_name)
        lab.up()
        log("lab up in %.1f s" % (time.monotonic() - t_start))
    rc = 1
    try:
        runner = NodeRunner(lab, os.path.join(lab.state_dir, "bench-runner"))
        verified = runner.verify(1)
        log(verified)
        bench = Bench(lab, runner, plan, log=log, only=only)
        bench.setup()
        bench.run_all()
        prof = None
        if not args.no_profile:
            t0 = time.monotonic()
            prof = profile_all(bench)
            log("profiles: done in %.1f s" % (time.monotonic() - t0))
        elapsed = time.monotonic() - t_start
        load_after = os.getloadavg()
        others = report.other_labs(lab.state_dir)
        busy = []
        if others:
            busy.append("other labs were up (%s)" % ", ".join(others))
        if max(load_before[0], load_after[0]) > 1.5:
            busy.append("load average %.1f before, %.1f after, on %d cores"
                        % (load_before[0], load_after[0], os.cpu_count()))
        command = "make bench" if not sys.argv[1:] else \
            "PYTHONPATH=lib:tests /usr/bin/python3 -m bench " + " ".join(sys.argv[1:])
        ctx = {"machine": report.machine(), "versions": report.versions(ROOT),
               "date": report.now(), "command": command, "elapsed": elapsed,
               "plan": plan.describe(), "verified": verified, "busy": "; ".join(busy)}
        print(report.text_report(bench, prof, ctx))
        if not args.no_write:
            text = report.markdown(bench, prof, ctx, report.previous_analysis(args.out))
            from bench import recovery
            text += recovery.previous(args.out)
            text += report.previous_fencing(args.out)
            with open(args.out + ".tmp", "w") as f:
                f.write(text)
            os.replace(args.out + ".tmp", args.out)
            for name, chart in report.charts(bench).items():
                path = os.path.join(os.path.dirname(os.path.abspath(args.out)), name)
                with open(path, "w") as f:
                    f.write(chart)
                log("wrote %s" % path)
            log("wrote %s" % args.out)
        log("whole run %.1f min" % ((time.monotonic() - t_start) / 60.0))
        rc = 0
    finally:
        if args.keep_lab or args.reuse_lab:
            log("lab %r left up (tear down: cd tests && /usr/bin/python3 -m vmlab --name %s "
                "down)" % (args.lab_name, args.lab_name))
        else:
            lab.down()
            log("lab torn down")
    return rc


if __name__ == "__main__":
    sys.exit(main())
