"""fence_vmceph with real Pacemaker: a node whose power fence is dead is fenced through
Ceph, and its VMs come back on the survivors (issue 12, "the power fence device broken").

Runs on the e2e session lab (tests/e2e/conftest.py, configured from cib-examples/pcs.sh),
after the other e2e modules (it is not in MODULE_ORDER). On its own, under a lab name of
its own:

    VMCEPH_E2E_LAB=h5pcmk PYTHONPATH=lib:tests /usr/bin/python3 -m pytest -v -s \
        tests/e2e/test_fence_vmceph_e2e.py

The lab's checkout fence agent is put into every node's /usr/sbin (the lab's overlay), a
client.fence Ceph user with the caps docs/fencing.md lists is created, and fence-ceph
(cib-examples/fence_vmceph.sh's device: addresses from the node attribute CephHealth
publishes) becomes level 2 after each node's fence_vmlab device. The victim's fence_vmlab
device is then broken (a state_dir that does not exist: its "BMC" does not answer), the
victim crashes, and the fencing history must name fence-ceph. Afterwards the victim is
unfenced (stonith_admin --unfence: fence_vmceph on), the power device repaired, the node
rejoins, and the configuration is put back.
"""

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agents" / "fence" / "fence_vmceph"
KEYRING = "/etc/ceph/ceph.client.fence.keyring"
CAPS = ["mon", 'allow r, allow command "osd blocklist", allow command "osd blocklist ls", '
        'allow command "osd down", allow command "config-key set", '
        'allow command "config-key get", allow command "config-key rm", '
        'allow command sessions', "osd", "allow *"]


def pcs(lab, *args, timeout=120):
    return lab.run(lab.first_alive(), ["pcs", *args], timeout=timeout)


def fence_events(lab, victim, node):
    out = lab.run(node, ["stonith_admin", "--history", victim, "--verbose",
                         "--output-as=xml"], timeout=30, check=False).stdout
    try:
        return [e.attrib for e in ET.fromstring(out).iter("fence_event")]
    except ET.ParseError:
        return []


def wait_started(lab, rsc, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = lab.run(lab.first_alive(), ["crm_mon", "-1", "--output-as=xml"], timeout=30,
                      check=False).stdout
        try:
            for r in ET.fromstring(out).iter("resource"):
                if r.get("id") == rsc and r.get("active") == "true":
                    return
        except ET.ParseError:
            pass
        time.sleep(1)
    raise AssertionError("%s did not start within %d s" % (rsc, timeout))


@pytest.fixture(scope="module")
def ceph_fence(cluster):
    lab = cluster.lab
    link = lab.path("sbin", "fence_vmceph")
    if not os.path.lexists(link):
        os.symlink(str(AGENT.resolve()), link)
    for i in lab.indexes:
        if lab.alive(i):
            lab.run(i, ["ceph", "auth", "get-or-create", "client.fence", *CAPS, "-o", KEYRING],
                    timeout=60)
            p = lab.run(i, ["stonith_admin", "--metadata", "-a", "fence_vmceph"],
                        check=False, timeout=60)
            assert p.returncode == 0, "fence_vmceph not visible in %s: %s" % (
                lab.node_name(i), p.stderr)
    # the addresses come from CephHealth's permanent node attribute
    nodes = ET.fromstring(lab.run(1, ["cibadmin", "-Q", "-o", "nodes"], timeout=30).stdout)
    addrs = {n.get("uname"): [nv.get("value") for nv in n.iter("nvpair")
                              if nv.get("name") == "vmceph-ceph-addrs"] for n in nodes.iter("node")}
    for i in lab.indexes:
        assert addrs.get(lab.node_name(i)) == [lab.node_ip(i)], addrs
    pcs(lab, "stonith", "create", "fence-ceph", "fence_vmceph", "ceph_user=fence",
        "ceph_keyring=" + KEYRING, "pcmk_host_list=" + " ".join(
            lab.node_name(i) for i in lab.indexes),
        "pcmk_host_check=static-list", "op", "monitor", "interval=60s",
        "meta", "allow-unhealthy-nodes=true")
    for i in lab.indexes:
        pcs(lab, "stonith", "level", "add", "2", lab.node_name(i), "fence-ceph")
    wait_started(lab, "fence-ceph")
    yield "fence-ceph"
    for i in lab.indexes:
        pcs(lab, "stonith", "level", "remove", "2", lab.node_name(i), "fence-ceph")
    pcs(lab, "stonith", "delete", "fence-ceph")


def test_dead_power_fence_node_is_fenced_through_ceph(cluster, story, ceph_fence, figure):
    lab = cluster.lab
    where = story.where()
    vms_on = {vm: n for vm, n in where.items() if vm.startswith("vm") and n}
    victim = next(story.index(n[0]) for vm, n in sorted(vms_on.items()))
    name = lab.node_name(victim)
    power = "fence-vmlab-" + name
    pcs(lab, "stonith", "update", power, "state_dir=/nonexistent/dead-bmc")
    try:
        story.settle()
        r = story.crash(victim, timeout=180)
        print(r)
        survivor = next(i for i in lab.indexes if i != victim and lab.alive(i))
        events = fence_events(lab, name, survivor)
        print(events)
        assert [e for e in events if e.get("status") == "success"], events
        assert r["vms"] and all(n != name for n, _ in r["running"].values()), r
        assert r["violations"] == [], r["violations"]
        # Ceph: the victim's address is blocklisted host-wide, by fence_vmceph
        ls = lab.ceph(survivor, "osd", "blocklist", "ls")
        assert "%s:0/0" % lab.node_ip(victim) in ls, ls
        figure("dead power fence, crash: fenced through Ceph after (s)", round(r["fenced_s"], 1))
        figure("dead power fence, crash: crash -> VM running on a survivor (s)",
               {vm: round(t, 1) for vm, (_, t) in r["running"].items()})
    finally:
        pcs(lab, "stonith", "update", power, "state_dir=" + lab.state_dir)
    # unfence (fence_vmceph on) before the node comes back, then let it rejoin
    survivor = next(i for i in lab.indexes if i != victim and lab.alive(i))
    p = lab.run(survivor, ["stonith_admin", "--unfence", name, "--timeout", "60"],
                check=False, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "%s:0/0" % lab.node_ip(victim) not in lab.ceph(survivor, "osd", "blocklist", "ls")
    r = story.rejoin(victim)
    print(r)


def leader(lab):
    import json
    q = json.loads(lab.ceph(lab.first_alive(), "quorum_status", "-f", "json"))
    return q["quorum_leader_name"]


def non_leader_with_a_vm(lab, story):
    """A node running a VM whose mon is not the leader (a VM is moved there if needed)."""
    lead = leader(lab)
    others = [i for i in lab.indexes if lab.node_name(i) != lead and lab.alive(i)]
    where = story.where()
    for i in others:
        if any(n and n[0] == lab.node_name(i) for vm, n in where.items() if vm.startswith("vm")):
            return i
    vm = sorted(v for v in where if v.startswith("vm"))[0]
    story.live_migrate(vm, others[0])
    return others[0]


def set_levels(lab, first_ceph):
    pcs(lab, "stonith", "level", "clear")
    for i in lab.indexes:
        n = lab.node_name(i)
        devs = ["fence-ceph", "fence-vmlab-" + n] if first_ceph else ["fence-vmlab-" + n,
                                                                       "fence-ceph"]
        for k, d in enumerate(devs, 1):
            pcs(lab, "stonith", "level", "add", str(k), n, d)


@pytest.mark.parametrize("first", ["ceph", "power"])
def test_crash_of_a_non_leader_ceph_first_vs_power_first(cluster, story, ceph_fence, figure,
                                                         first):
    """Same crash, the other level first: where the time goes (docs/fencing.md)."""
    lab = cluster.lab
    set_levels(lab, first == "ceph")
    try:
        story.settle()
        victim = non_leader_with_a_vm(lab, story)
        name = lab.node_name(victim)
        story.settle()
        r = story.crash(victim, timeout=180)
        print(r)
        survivor = next(i for i in lab.indexes if i != victim and lab.alive(i))
        assert r["vms"] and all(n != name for n, _ in r["running"].values()), r
        assert r["violations"] == [], r["violations"]
        listed = "%s:0/0" % lab.node_ip(victim) in lab.ceph(survivor, "osd", "blocklist", "ls")
        assert listed == (first == "ceph"), "fenced by the wrong level"
        figure("crash of a non-leader, %s fence first: fenced after (s)" % first,
               round(r["fenced_s"], 1))
        figure("crash of a non-leader, %s fence first: crash -> VM running (s)" % first,
               {vm: round(t, 1) for vm, (_, t) in r["running"].items()})
        if listed:
            p = lab.run(survivor, ["stonith_admin", "--unfence", name, "--timeout", "60"],
                        check=False, timeout=90)
            assert p.returncode == 0, p.stdout + p.stderr
        print(story.rejoin(victim))
    finally:
        set_levels(lab, False)


def test_partition_fenced_through_ceph_alone(cluster, story, ceph_fence, figure):
    """Pull a node's cable with fence_vmceph the only level: the node keeps running (not
    powered off), its clients are blocklisted, its VMs run on the majority, and the
    invariant checker never sees two writers. Afterwards the lab powers it off (the
    rejoin of a node fenced alive, with stale domains, is issue 12 item 3, not done here),
    unfences it and lets it rejoin."""
    lab = cluster.lab
    pcs(lab, "stonith", "level", "clear")
    for i in lab.indexes:
        pcs(lab, "stonith", "level", "add", "1", lab.node_name(i), "fence-ceph")
    try:
        story.settle()
        victim = non_leader_with_a_vm(lab, story)
        name = lab.node_name(victim)
        story.settle()
        r = story.partition(victim, timeout=180)
        print(r)
        assert not r["powered_off"], "nothing may power the node off: Ceph fenced it"
        survivor = next(i for i in lab.indexes if i != victim and lab.alive(i))
        assert "%s:0/0" % lab.node_ip(victim) in lab.ceph(survivor, "osd", "blocklist", "ls")
        assert r["vms"] and all(n != name for n, _ in r["running"].values()), r
        assert r["violations"] == [], r["violations"]
        figure("partition, fence_vmceph only: fenced after (s)", round(r["fenced_s"], 1))
        figure("partition, fence_vmceph only: cut off -> VM running (s)",
               {vm: round(t, 1) for vm, (_, t) in r["running"].items()})
        lab.crash(victim)
        p = lab.run(survivor, ["stonith_admin", "--unfence", name, "--timeout", "60"],
                    check=False, timeout=90)
        assert p.returncode == 0, p.stdout + p.stderr
        print(story.rejoin(victim, heal=True))
    finally:
        set_levels(lab, False)


def test_automatic_unfencing_when_the_node_rejoins(cluster, story, ceph_fence, figure):
    """fence_vmceph as level 1 with meta provides=unfencing (the docs' level-1 setup):
    adding it restarts no VM, a crashed node is fenced through Ceph, and when it boots
    again Pacemaker unfences it by itself (fence_vmceph on) before running anything there:
    the host-wide entry is gone without stonith_admin --unfence."""
    lab = cluster.lab
    mark = len(cluster.checker.violations)
    pcs(lab, "stonith", "update", "fence-ceph", "meta", "provides=unfencing")
    set_levels(lab, True)
    try:
        story.settle()
        assert cluster.checker.since(mark) == []
        victim = non_leader_with_a_vm(lab, story)
        name, ip = lab.node_name(victim), lab.node_ip(victim)
        story.settle()
        r = story.crash(victim, timeout=180)
        print(r)
        survivor = next(i for i in lab.indexes if i != victim and lab.alive(i))
        assert "%s:0/0" % ip in lab.ceph(survivor, "osd", "blocklist", "ls")
        assert r["violations"] == [], r["violations"]
        t0 = time.monotonic()
        rj = story.rejoin(victim)
        print(rj)
        assert "%s:0/0" % ip not in lab.ceph(survivor, "osd", "blocklist", "ls")
        events = fence_events(lab, name, survivor)
        print(events)
        assert any(e.get("action") == "on" and e.get("status") == "success" for e in events)
        figure("automatic unfencing: boot -> green (s)", round(time.monotonic() - t0, 1))
    finally:
        set_levels(lab, False)
        pcs(lab, "stonith", "update", "fence-ceph", "meta", "provides=")
