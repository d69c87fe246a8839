#!/usr/bin/python3
"""Check systemd's own view of the unit graph: is UNIT ordered after each of DEPS?

    packaging/unitgraph.py [--unit-path DIR] UNIT DEP...

Asks systemd itself rather than reading unit files: ``systemd --test --system
--unit=UNIT`` loads every unit file and drop-in the way PID 1 would (vendor and /etc
directories, ``.d/`` drop-ins, default dependencies), prints each unit's merged
dependencies and exits. It needs no running systemd (this machine has none) but refuses
to run as root ("Don't run test mode as root"), so as root it runs as ``nobody``.
``--unit-path DIR`` puts DIR before the standard directories (``$SYSTEMD_UNIT_PATH``
with a trailing ``:``), to check a drop-in before it is installed.

"UNIT after DEP" is transitive: UNIT After= X and X After= DEP (or DEP Before= X) orders
UNIT after DEP, and at shutdown systemd stops UNIT before DEP (both get stop jobs then).
Prints the vmceph (or --unit-path) drop-ins systemd loaded, one line per DEP with the
path found, and systemd's own warnings (unknown keys, ordering cycles); exits 1 if a DEP
is not ordered before UNIT, or systemd warned about an ordering cycle or a vmceph file,
2 if systemd could not be run. Standard library only.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

SYSTEMD = "/lib/systemd/systemd"


def dump(unit, unit_path=None, systemd=SYSTEMD):
    """(stdout, stderr) of ``systemd --test`` for UNIT's start transaction."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    if unit_path:
        env["SYSTEMD_UNIT_PATH"] = os.path.abspath(unit_path) + ":"
    argv = [systemd, "--test", "--system", "--unit=" + unit, "--no-pager"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] + argv
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    if p.returncode != 0 or "-> Unit " not in p.stdout:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), p.returncode,
                                                 p.stderr.strip()[-2000:]))
    return p.stdout, p.stderr


def parse(text):
    """systemd --test output -> {unit: {"After": set, "Before": set, "DropIn": [paths]}}."""
    units = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\t-> Unit (\S+):$", line)
        if m:
            current = units.setdefault(m.group(1), collections.defaultdict(set))
            continue
        m = re.match(r"^\t\t(After|Before|DropIn Path): (\S+)", line)
        if m and current is not None:
            current[m.group(1)].add(m.group(2))
    return units


def after_graph(units):
    """unit -> the units it is ordered after (direct edges, from both directions)."""
    graph = collections.defaultdict(set)
    for name, props in units.items():
        graph[name] |= props["After"]
        for other in props["Before"]:
            graph[other].add(name)
    return graph


def path_after(graph, unit, dep):
    """The chain [unit, ..., dep] through After= edges, or None (breadth-first)."""
    seen = {unit: None}
    queue = collections.deque([unit])
    while queue:
        u = queue.popleft()
        if u == dep:
            chain = []
            while u is not None:
                chain.append(u)
                u = seen[u]
            return chain[::-1]
        for v in sorted(graph.get(u, ())):
            if v not in seen:
                seen[v] = u
                queue.append(v)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unit-path", help="a directory searched before the standard ones")
    ap.add_argument("unit")
    ap.add_argument("deps", nargs="+")
    args = ap.parse_args(argv)
    try:
        out, err = dump(args.unit, args.unit_path)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        print("unitgraph: cannot run systemd --test: %s" % e, file=sys.stderr)
        return 2
    units = parse(out)
    graph = after_graph(units)
    bad = 0
    for name in sorted(units):
        for path in sorted(units[name]["DropIn Path"]):
            if "vmceph" in path or (args.unit_path and path.startswith(
                    os.path.abspath(args.unit_path))):
                print("drop-in %s (%s)" % (path, name))
    for dep in args.deps:
        chain = path_after(graph, args.unit, dep)
        if chain:
            print("ok   %s after %s: %s" % (args.unit, dep, " -> ".join(chain)))
        else:
            bad += 1
            print("FAIL %s is not ordered after %s" % (args.unit, dep))
    for line in err.splitlines():
        # systemd's complaints about the files it loaded ("FILE:LINE: Unknown key name
        # ...", "... is marked executable", ordering cycles), not its start-up chatter;
        # one about a vmceph file or a cycle fails the check
        if re.search(r"^/\S+:\d+: |ordering cycle|is marked executable", line):
            print("systemd: %s" % line)
            if "cycle" in line or "vmceph" in line:
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
