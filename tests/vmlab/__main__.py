"""Command line of the lab:

    python3 -m vmlab [--name NAME] up [--nodes N] [--pacemaker] [--remotes N] [--no-mgr] [--token-ms MS]
                                      [--node-prefix P] [--mon-lease S] [--project-root DIR]
    python3 -m vmlab [--name NAME] configure      # the cluster from cib-examples/pcs.sh
    python3 -m vmlab [--name NAME] status | down | crash N | start N | partition N | heal N
    python3 -m vmlab [--name NAME] stop-mon N | start-mon N
    python3 -m vmlab [--name NAME] on N CMD...
    python3 -m vmlab [--name demo] demo [--keep] [--mon-lease S]   # up, configure, the story
    python3 -m vmlab [--name chaos] chaos --seed N --faults K [--agent rbd|virtualdomain]
                     [--kinds a,b] [--canary] [--report docs/reliability.md] [--keep|--attach]

Every command but `up` reads the lab's description from its state directory.
"""

import argparse
import os
import subprocess
import sys

from .lab import DEFAULT_STATE_ROOT, Lab
from .util import LabError, base_env


def parse(argv):
    p = argparse.ArgumentParser(prog="python3 -m vmlab", description="hyperconverged test lab")
    p.add_argument("--name", default="lab", help="lab name (state dir STATE_ROOT/NAME)")
    p.add_argument("--state-root", default=DEFAULT_STATE_ROOT)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create and start the lab")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--pacemaker", action="store_true", help="also corosync + Pacemaker")
    up.add_argument("--remotes", type=int, default=0,
                    help="also N compute-only pacemaker_remote nodes remote1.. (libvirtd, "
                         "QEMU, pacemaker-remoted, a Ceph client; needs --pacemaker)")
    up.add_argument("--no-mgr", action="store_true", help="no ceph-mgr (saves ~300 MiB)")
    up.add_argument("--token-ms", type=int, default=1000, help="corosync token timeout")
    up.add_argument("--project-root", default=None, help="checkout whose agents/ the nodes see")
    up.add_argument("--node-prefix", default="n",
                    help="node names PREFIX1..N (configure needs 'node': node1..node3)")
    up.add_argument("--mon-lease", type=float, default=None,
                    help="Ceph 'mon lease' in s (default 5; 2 = quorum back ~6 s sooner "
                         "after a node dies)")
    sub.add_parser("configure", help="configure the cluster from cib-examples/pcs.sh "
                                     "(lab up with --pacemaker --node-prefix node)")
    demo = sub.add_parser("demo", help="up, configure and play the story, then down")
    demo.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    demo.add_argument("--mon-lease", type=float, default=2.0,
                      help="Ceph 'mon lease' of the demo lab (default 2; Ceph's is 5)")
    chaos = sub.add_parser("chaos", help="seeded fault soak on a fresh lab (vmlab/chaos.py)",
                           description="A first SIGTERM or Ctrl-C ends the soak after the "
                                       "fault being played and still writes the report; a "
                                       "second one interrupts at once.")
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--faults", type=int, default=13, help="number of faults to play")
    chaos.add_argument("--agent", choices=["rbd", "virtualdomain"], default="rbd",
                       help="virtualdomain: the canary (a fault VirtualDomain cannot survive)")
    chaos.add_argument("--kinds", default=None, help="comma-separated fault kinds (default all)")
    chaos.add_argument("--canary", action="store_true",
                       help="after the soak, the canary on the same lab (VirtualDomain)")
    chaos.add_argument("--report", default=None,
                       help="write the soak's section of this file (docs/reliability.md) "
                            "and chaos-timeline.svg next to it")
    chaos.add_argument("--max-minutes", type=float, default=None,
                       help="begin no fault after this many minutes of soak (the report "
                            "says how many of the plan were played)")
    chaos.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    chaos.add_argument("--attach", action="store_true",
                       help="use the lab --name as it is (up and configured)")
    sub.add_parser("status", help="nodes, processes, memory, Ceph and Pacemaker state")
    sub.add_parser("down", help="complete teardown")
    for name, text in [("crash", "power a node off"), ("start", "boot a node again"),
                       ("partition", "cut a node off the network"), ("heal", "reconnect a node"),
                       ("stop-mon", "stop a node's ceph-mon"),
                       ("start-mon", "start a node's ceph-mon again")]:
        sub.add_parser(name, help=text).add_argument("node", type=int)
    on = sub.add_parser("on", help="run a command inside a node")
    on.add_argument("--timeout", type=float, default=600, help="kill CMD after this many s")
    on.add_argument("node", type=int)
    on.add_argument("cmd", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo
            name = args.name if args.name != "lab" else "demo"
            return run_demo(name=name, state_root=args.state_root, keep=args.keep,
                            mon_lease=args.mon_lease)
        if args.command == "chaos":
            from .chaos import run_cli
            name = args.name if args.name != "lab" else "chaos"
            kinds = args.kinds.split(",") if args.kinds else None
            return run_cli(name, args.seed, args.faults, agent=args.agent, kinds=kinds,
                           report=args.report, keep=args.keep, attach=args.attach,
                           canary=args.canary, state_root=args.state_root,
                           max_minutes=args.max_minutes)
        if args.command == "up":
            lease = args.mon_lease
            extra = {"mon lease": int(lease) if lease == int(lease) else lease} if lease else {}
            lab = Lab(name=args.name, nodes=args.nodes, pacemaker=args.pacemaker,
                      mgr=not args.no_mgr, token_ms=args.token_ms,
                      project_root=args.project_root, state_root=args.state_root,
                      node_prefix=args.node_prefix, ceph_conf_extra=extra,
                      remotes=args.remotes)
            lab.up()
            print(lab.status())
            return 0
        if args.command == "down":
            try:
                lab = Lab.attach(args.name, args.state_root)
            except LabError:  # no lab.json: clean up whatever the default names left
                lab = Lab(name=args.name, state_root=args.state_root)
            lab.down()
            return 0
        lab = Lab.attach(args.name, args.state_root)
        if args.command == "status":
            print(lab.status())
            if os.path.exists(lab.path("cluster.json")):
                from .cluster_config import status
                print(status(lab))
        elif args.command == "configure":
            from .cluster_config import configure
            cfg = configure(lab)
            print(f"configured in {cfg.timings['total_s']}s; CIB files in {cfg.cib_dir}")
            print(lab.status())
        elif args.command == "stop-mon":
            lab.stop_mon(args.node)
        elif args.command == "start-mon":
            lab.start_mon(args.node)
        elif args.command == "crash":
            lab.crash(args.node)
        elif args.command == "start":
            lab.start_node(args.node)
        elif args.command == "partition":
            lab.partition(args.node)
        elif args.command == "heal":
            lab.heal(args.node)
        elif args.command == "on":
            if not args.cmd:
                raise LabError("on N CMD...: no command given")
            return on_node(lab, args.node, args.cmd, args.timeout)
        return 0
    except LabError as exc:
        print(f"vmlab: {exc}", file=sys.stderr)
        return 1


def on_node(lab, i, cmd, timeout):
    """Output goes straight to the terminal (Lab.run would capture it)."""
    holder = lab._require_alive(i)
    argv = ["nsenter", "-t", str(holder), "-m", "-n", "-u", "--wd=/", "--", *cmd]
    try:
        return subprocess.call(argv, env=base_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"on {i}: killed after {timeout}s: {' '.join(cmd)}") from None


if __name__ == "__main__":
    sys.exit(main())
