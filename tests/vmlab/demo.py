"""`make demo` = `cd tests && /usr/bin/python3 -m vmlab demo`: the whole story on a
throw-away three-node lab, with a timeline of what happened and how long each step took.

    1. the lab comes up (Ceph mon + OSD, libvirtd, corosync + Pacemaker on each node) and
       is configured from cib-examples/pcs.sh (vmlab/cluster_config.py);
    2. the VMs run, one per node; `vmceph check` shows which node's QEMU writes which image;
    3. `crm resource move vm1 <node>`: a live migration, with libvirt's downtime figure;
    4. the node running vm1 is crashed: fenced, its VMs start on survivors after the agent
       blocklisted the dead clients and broke their locks; the first write does not stall;
    5. the node comes back and rejoins;
    6. a node is cut off from the network: the majority fences it and recovers its VMs;
    7. it comes back and rejoins; everything is torn down (also on Ctrl-C or failure).

An invariant checker watches every guarded image all along (never two writers, no VM lost).
"""

import os
import signal
import sys
import time

from . import cluster_config
from .invariants import InvariantChecker
from .lab import Lab
from .owner import owning
from .story import Story
from .util import LabError


class Timeline:
    def __init__(self):
        self.t0 = time.monotonic()
        self.steps = []

    def say(self, text=""):
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}" if text else "", flush=True)

    def detail(self, text):
        print(f"           {text}", flush=True)

    def step(self, title):
        return _Step(self, title)


class _Step:
    def __init__(self, timeline, title):
        self.tl, self.title = timeline, title

    def __enter__(self):
        self.t0 = time.monotonic()
        self.tl.say(f"== {self.title}")
        return self

    def __exit__(self, exc_type, *_):
        took = time.monotonic() - self.t0
        self.tl.steps.append((self.title, took, exc_type is None))
        self.tl.say(f"   {'done' if exc_type is None else 'FAILED'} in {took:.1f}s")
        return False


def _sigterm(*_):
    raise KeyboardInterrupt


def run_demo(name="demo", state_root=None, keep=False, mon_lease=2.0):
    signal.signal(signal.SIGTERM, _sigterm)
    tl = Timeline()
    lease = int(mon_lease) if mon_lease == int(mon_lease) else mon_lease
    kwargs = {"state_root": state_root} if state_root else {}
    lab = Lab(name=name, nodes=3, pacemaker=True, node_prefix="node", token_ms=1000,
              ceph_conf_extra={"mon lease": lease}, verbose=False, **kwargs)
    box = {"checker": None, "ok": False}
    try:
        with owning(lab):  # a second demo under the same name stops here
            _run(lab, tl, lease, keep, name, box)
    except LabError as exc:  # the lab is someone else's: nothing was touched
        tl.say(f"FAILED: {exc}")
    return 0 if box["ok"] else 1


def _run(lab, tl, lease, keep, name, box):
    try:
        lab.down()
        box["checker"] = _play(lab, tl, lease, box)
        box["ok"] = not box["checker"].violations
    except KeyboardInterrupt:
        tl.say("interrupted: tearing the lab down")
    except LabError as exc:
        tl.say(f"FAILED: {exc}")
    finally:
        if box["checker"] is not None:
            box["checker"].stop()
        if keep and box["ok"]:
            tl.say(f"lab {name} left up (python3 -m vmlab --name {name} down)")
        else:
            with tl.step("teardown"):
                lab.down()
        _summary(tl, box["checker"])


def _play(lab, tl, lease, box):
    with tl.step(f"lab up: 3 nodes (node1..node3), Ceph (mon lease {lease} s) + libvirt + "
                 "corosync/Pacemaker (token 1000 ms)"):
        lab.up()
        ips = ", ".join(lab.node_ip(i) for i in lab.indexes)
        tl.detail(f"state in {lab.state_dir}; nodes {ips}")
    with tl.step("configure the cluster from cib-examples/pcs.sh (+ lab adaptations); vm1's "
                 "definition is kept in Ceph"):
        cfg = cluster_config.configure(lab, ceph_defined=("vm1",))
        tl.detail(f"vm1: config={cfg.in_ceph['vm1']} (vmceph config put; docs/definitions.md)")
        t = cfg.timings
        tl.detail(f"pcs.sh {t['pcs_sh_s']}s, adaptations {t['adapt_s']}s "
                  f"({cfg.cib_dir}/adapt.sh), push -> VMs up and green {t.get('settle_s')}s")
    checker = InvariantChecker(lab, cfg.vms, log=lambda m: None).start()
    box["checker"] = checker  # stopped by the caller, also if a step fails
    story = Story(lab, cfg, checker, say=tl.detail)
    tl.detail(f"invariant checker sampling {len(cfg.images)} images every 0.5 s")

    with tl.step("VMs run, one per node; vmceph check shows who writes what"):
        r = story.vms_running()
        for vm, node in r["placement"].items():
            tl.detail(f"{vm} on {node} (first guest write {r['first_write_s'][vm] * 1000:.0f} ms)")
        tl.detail(f"vmceph check on {r['checked_on']}:")
        for image, node, client, addr in r["writers"]:
            tl.detail(f"  {image:16} written by {client} at {addr} = {node}")
        tl.detail("  decisions: " + ", ".join(f"{vm} {d}" for vm, d in r["decisions"].items()))
        _status(lab, tl, lab.first_alive())

    names = [lab.node_name(i) for i in lab.indexes]
    source = r["placement"]["vm1"]
    target = names[(names.index(source) + 1) % len(names)]
    with tl.step(f"crm resource move vm1 {target}: live migration"):
        m = story.live_migrate("vm1", target)
        tl.detail(f"vm1 {m['source']} -> {m['target']} in {m['took_s']:.1f}s (move to done)")
        for line in m["log"]:
            tl.detail(line)
        tl.detail(f"the VM never stopped: {m['qemu_always_present']}; started cold on the "
                  f"target: {m['cold_start_on_target']}; two writers only during the "
                  f"migration window: {not m['violations']}")

    victim = story.index(target)
    with tl.step(f"crash {target} (runs vm1 and {_others(story, target, 'vm1')})"):
        c = story.crash(victim)
        _report_failure(tl, c, "crash")
        _status(lab, tl, lab.first_alive())

    with tl.step(f"{target} boots again and rejoins"):
        j = story.rejoin(victim)
        tl.detail(f"booted {j['booted_s']:.1f}s, Ceph HEALTH_OK {j['health_ok_s']:.1f}s, "
                  f"Pacemaker online {j['online_s']:.1f}s, #health-ceph green {j['green_s']:.1f}s")

    where = story.where()
    load = {i: sum(lab.node_name(i) in n for n in where.values()) for i in lab.indexes}
    cut = max(load, key=lambda i: (load[i], i))
    with tl.step(f"partition {lab.node_name(cut)} (cable pulled; runs "
                 f"{', '.join(vm for vm, n in where.items() if lab.node_name(cut) in n)})"):
        p = story.partition(cut)
        _report_failure(tl, p, "partition")

    with tl.step(f"{lab.node_name(cut)} reconnected, boots again and rejoins"):
        j = story.rejoin(cut, heal=True)
        tl.detail(f"booted {j['booted_s']:.1f}s, Ceph HEALTH_OK {j['health_ok_s']:.1f}s, "
                  f"Pacemaker online {j['online_s']:.1f}s, #health-ceph green {j['green_s']:.1f}s")
        tl.detail("VMs: " + ", ".join(f"{vm} on {n[0]}" for vm, n in j["where"].items() if n))
    return checker


def _status(lab, tl, i):
    """`vmceph status` (docs/status.md) inside node i, as an administrator would run it."""
    lib = os.path.join(lab.project_root, "lib")
    p = lab.run(i, ["/usr/bin/python3", "-m", "vmceph", "status"], env={"PYTHONPATH": lib},
                timeout=90, check=False)
    tl.detail(f"vmceph status on {lab.node_name(i)}:")
    for line in (p.stdout or p.stderr).rstrip().splitlines():
        tl.detail("  " + line)


def _others(story, node, vm):
    vms = [v for v, nodes in story.where().items() if node in nodes and v != vm]
    return ", ".join(vms) if vms else "nothing else"


def _report_failure(tl, r, kind):
    tl.detail(f"{r['victim']} fenced after {r['fenced_s']:.1f}s; crm_mon shows it offline and "
              f"clean after {r['gone_s']:.1f}s")
    for vm, (node, t) in r["running"].items():
        tl.detail(f"{vm} running on {node} {t:.1f}s after the {kind} "
                  f"(first write {r['first_write_s'][vm] * 1000:.0f} ms: no stall)")
    for line in r["blocklisted"] + r["locks_broken"]:
        tl.detail(line[:160] + ("..." if len(line) > 160 else ""))
    for line in r["retries"]:
        tl.detail(line[:160] + ("..." if len(line) > 160 else ""))
    tl.detail(f"two writers at any moment: {'YES' if r['violations'] else 'never'}")


def _summary(tl, checker):
    tl.say("")
    tl.say("timeline:")
    for title, took, ok in tl.steps:
        print(f"  {took:6.1f}s  {'ok  ' if ok else 'FAIL'}  {title}")
    total = time.monotonic() - tl.t0
    print(f"  {total:6.1f}s  total")
    if checker is not None:
        rep = checker.report()
        print(f"invariants: {rep['samples']} samples of every guarded image, "
              f"{rep['migration_overlaps']} allowed overlaps (live migration), "
              f"{rep['violations']} violations")
        for v in checker.violations:
            print(f"  VIOLATION {v}")
    sys.stdout.flush()
