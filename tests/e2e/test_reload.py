"""Changing parameters under real Pacemaker 2.1 (issue 13): reload, or restart.

The agents advertise OCF 1.0's ``reload`` and mark with unique="1" the parameters whose
change must restart the resource (ocf.RELOAD_DECISION). Here, on the session's lab:

1. ``node_addresses`` of a running VM changes: Pacemaker runs the agent's ``reload``
   (controller log "Result of reload operation"), no stop, no start of the domain: the
   same QEMU process runs the guest. The CIB's history then shows the reload the way
   Pacemaker records one (pcmk__create_history_xml: a successful reload is stored as a
   start): the resource's last_0 entry is a start with a new call id and the new digest,
   and no stop or migration entry appears.
2. ``config`` changes (a copy of the same XML at another path): unique="1", so Pacemaker
   stops and starts the VM: a stop operation, a new QEMU process.
3. CephHealth's ``dampen`` changes: every clone instance reloads, nothing stops, the node
   health attribute stays green throughout (a stop would remove it).

Everything is put back afterwards (one more restart and reloads). Reuses the session's
Pacemaker lab (tests/e2e/conftest.py `cluster`).
"""

import os
import re
import shutil
import time
import xml.etree.ElementTree as ET

import pytest

from vmlab import cluster_config
from vmlab.story import LogCursor
from vmlab.util import wait_until

pytestmark = pytest.mark.e2e


def qemu_pid(lab, i, vm):
    p = lab.run(i, ["cat", f"/run/libvirt/qemu/{vm}.pid"], check=False, timeout=15)
    return int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip() else None


def history(lab, rsc_ids):
    """{(node, op id): (operation, call-id, rc-code, interval, op-digest)} from the CIB."""
    root = ET.fromstring(lab.run(lab.first_alive(), ["cibadmin", "-Q", "-o", "status"],
                                 timeout=30).stdout)
    ops = {}
    for state in root.iter("node_state"):
        for rsc in state.iter("lrm_resource"):
            if rsc.get("id") not in rsc_ids:
                continue
            for op in rsc.iterfind("lrm_rsc_op"):
                ops[(state.get("uname"), op.get("id"))] = (
                    op.get("operation"), int(op.get("call-id")), op.get("rc-code"),
                    op.get("interval"), op.get("op-digest"))
    return ops


def controller_results(cursor, rsc, nodes):
    """[(node index, operation, result)] of the controller's 'Result of OP operation for
    RSC' lines since the cursor's mark (what pacemaker-controld executed)."""
    rx = re.compile(r"Result of (\S+) operation for %s(?::\d+)? on \S+: (\S+)" % re.escape(rsc))
    out = []
    for i in nodes:
        for line in cursor.lines(i, agent_only=False):
            m = rx.search(line)
            if m:
                out.append((i, m.group(1), m.group(2)))
    return out


def set_param(lab, rsc, name, value):
    argv = ["crm_resource", "-r", rsc]
    argv += ["-d", name] if value is None else ["-p", name, "-v", value]
    lab.run(lab.first_alive(), argv, timeout=30)


def get_param(lab, rsc, name):
    p = lab.run(lab.first_alive(), ["crm_resource", "-r", rsc, "-g", name, "-Q"],
                timeout=30, check=False)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


@pytest.fixture
def settled(cluster):
    lab, cfg = cluster.lab, cluster.cfg
    lab.wait_pacemaker_online(lab.nodes, timeout=120)
    cluster_config.wait_settled(lab, cfg, timeout=180)
    return cluster


def test_node_addresses_reload_and_config_restarts(settled, invariants, figure):
    lab, cfg, story = settled.lab, settled.cfg, settled.story
    vm = sorted(v for v in cfg.vms if v not in cfg.in_ceph)[0]
    node = story.where()[vm][0]
    i = story.index(node)
    pid = qemu_pid(lab, i, vm)
    assert pid, f"no QEMU pid for {vm} on {node}"
    before = history(lab, {vm})
    last = before[(node, f"{vm}_last_0")]
    assert last[0] in ("start", "migrate_from"), last
    old_addresses = get_param(lab, vm, "node_addresses")

    # 1. node_addresses: a reload, the guest untouched
    mapping = " ".join(f"{lab.node_name(j)}={lab.node_ip(j)}" for j in lab.indexes)
    logs = LogCursor(lab).mark()
    t0 = time.monotonic()
    set_param(lab, vm, "node_addresses", mapping)
    wait_until(lambda: ("reload", "ok") in [(op, r) for _i, op, r in
                                            controller_results(logs, vm, [i])],
               timeout=90, interval=0.5, what=f"reload of {vm} on {node}")
    lab.run(i, ["crm_resource", "--wait", "-T", "60s"], timeout=90)
    reload_s = time.monotonic() - t0
    ops = controller_results(logs, vm, lab.indexes)
    print("controller results after the node_addresses change:", ops)
    assert [op for _i, op, _r in ops if op not in ("reload", "monitor")] == [], ops
    assert logs.grep(r"RBDVirtualDomain\(%s\).*reload: new parameters taken for domain %s, "
                     r"which keeps running untouched" % (re.escape(vm), re.escape(vm)), [i])
    assert qemu_pid(lab, i, vm) == pid, "the QEMU process was replaced by a reload"
    assert story.domstate(i, vm) == "running"
    assert story.where()[vm] == [node]
    after = history(lab, {vm})
    new_last = after[(node, f"{vm}_last_0")]
    # Pacemaker stores a successful reload as a start, with the new parameters' digest
    assert new_last[0] == "start" and new_last[1] > last[1] and new_last[4] != last[4], \
        (last, new_last)
    assert not [k for k, v in after.items() if v[0] in ("stop", "migrate_to", "migrate_from")
                and before.get(k) != v], after
    crm_mon = lab.run(i, ["crm_mon", "-1", "--include=operations", "-r"], timeout=30).stdout
    print(crm_mon)
    figure("reload of node_addresses (s, same QEMU pid)", round(reload_s, 1))

    # 2. config: unique="1", a restart (stop, start, a new QEMU)
    param = get_param(lab, vm, "config")
    copy_host = os.path.join(os.path.dirname(cfg.configs[vm]), f"{vm}-reload-copy.xml")
    copy_param = os.path.join(os.path.dirname(param), f"{vm}-reload-copy.xml")
    shutil.copyfile(cfg.configs[vm], copy_host)
    try:
        for j in lab.indexes:
            if lab.alive(j):
                lab.run(j, ["test", "-f", copy_param], timeout=15)
        logs = LogCursor(lab).mark()
        settled.checker.expect_down(vm)      # down for the restart, not lost
        t0 = time.monotonic()
        set_param(lab, vm, "config", copy_param)
        wait_until(lambda: {("stop", "ok"), ("start", "ok")} <= {
            (op, r) for _j, op, r in controller_results(logs, vm, lab.indexes)},
            timeout=180, interval=0.5, what=f"{vm} restarted after the config change")
        cluster_config.wait_settled(lab, cfg, timeout=180)
        restart_s = time.monotonic() - t0
        settled.checker.expect_down(vm, False)
        ops = controller_results(logs, vm, lab.indexes)
        print("controller results after the config change:", ops)
        assert "reload" not in [op for _j, op, _r in ops], ops
        where = story.where()[vm][0]
        new_pid = qemu_pid(lab, story.index(where), vm)
        assert new_pid and (where != node or new_pid != pid), (node, pid, where, new_pid)
        figure("restart after a config change (s)", round(restart_s, 1))
    finally:
        # back as configured: config (a restart), node_addresses (a reload)
        settled.checker.expect_down(vm)
        set_param(lab, vm, "config", param)
        set_param(lab, vm, "node_addresses", old_addresses)
        try:
            cluster_config.wait_settled(lab, cfg, timeout=180)
        finally:
            settled.checker.expect_down(vm, False)
            os.unlink(copy_host)


def test_cephhealth_dampen_reloads_every_instance(settled, invariants, figure):
    lab = settled.lab
    old = get_param(lab, "ceph-health", "dampen")
    nodes = [j for j in lab.indexes if lab.alive(j)]
    logs = LogCursor(lab).mark()
    t0 = time.monotonic()
    set_param(lab, "ceph-health", "dampen", "20s")
    seen = []
    try:
        def all_reloaded():
            # the health attribute, sampled meanwhile: a stop would have deleted it
            seen.append(cluster_config.health(lab))
            done = {j for j, op, r in controller_results(logs, "ceph-health", nodes)
                    if (op, r) == ("reload", "ok")}
            return done == set(nodes)
        wait_until(all_reloaded, timeout=90, interval=0.5,
                   what="every CephHealth instance reloaded")
        seen.append(cluster_config.health(lab))
        assert all(c.get(lab.node_name(j)) == "green" for c in seen for j in nodes), seen
        ops = controller_results(logs, "ceph-health", nodes)
        assert [op for _j, op, _r in ops if op not in ("reload", "monitor")] == [], ops
        figure("CephHealth reload of dampen on every node (s)", round(time.monotonic() - t0, 1))
    finally:
        set_param(lab, "ceph-health", "dampen", old)
        lab.run(lab.first_alive(), ["crm_resource", "--wait", "-T", "90s"], timeout=120)


def test_crm_resource_trace_writes_the_agents_trace(settled, invariants, figure):
    """`crm resource trace VM monitor 10 DIR` (crmsh 4.4: the interval in seconds, no unit;
    '10s' is a usage error): the next monitors run with
    OCF_RESKEY_trace_ra=1 and trace_dir=DIR, and the agent writes one trace per action at
    DIR/RBDVirtualDomain/VM.monitor.<timestamp>, as ocf-shellfuncs names them."""
    lab, cfg, story = settled.lab, settled.cfg, settled.story
    vm = sorted(cfg.vms)[0]
    node = story.where()[vm][0]
    i = story.index(node)
    pid = qemu_pid(lab, i, vm)
    tdir = f"/run/vmceph-trace-{os.getpid()}"
    t0 = time.monotonic()
    lab.run(i, ["crm", "resource", "trace", vm, "monitor", "10", tdir], timeout=60)
    try:
        def traces():
            p = lab.run(i, ["sh", "-c", f"ls {tdir}/RBDVirtualDomain/ 2>/dev/null"],
                        check=False, timeout=15)
            return [n for n in p.stdout.split() if n.startswith(f"{vm}.monitor.")]
        names = wait_until(traces, timeout=90, interval=1.0, what=f"a trace of {vm}'s monitor")
        assert all(re.fullmatch(r"%s\.monitor\.\d{4}-\d\d-\d\d\.\d\d:\d\d:\d\d" % re.escape(vm),
                                n) for n in names), names
        wait_until(lambda: "exit 0 (OCF_SUCCESS)" in lab.run(
            i, ["cat", f"{tdir}/RBDVirtualDomain/{traces()[0]}"], timeout=15).stdout,
            timeout=30, interval=1.0, what="a finished trace")
        text = lab.run(i, ["cat", f"{tdir}/RBDVirtualDomain/{traces()[0]}"], timeout=15).stdout
        assert "# env OCF_RESKEY_trace_ra=1" in text
        assert re.search(r"^\+ +[0-9.]+ rbdvd\.monitor:\d+$", text, re.M), text
        figure("crm resource trace: first trace file (s)", round(time.monotonic() - t0, 1))
    finally:
        lab.run(i, ["crm", "resource", "untrace", vm, "monitor", "10"], timeout=60,
                check=False)
        lab.run(i, ["rm", "-rf", tdir], timeout=15, check=False)
        lab.run(i, ["crm_resource", "--wait", "-T", "60s"], timeout=90, check=False)
    assert qemu_pid(lab, i, vm) == pid
