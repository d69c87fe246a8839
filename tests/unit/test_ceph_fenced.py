"""A node fenced through Ceph (fence_vmceph) is GONE for the start decision (issue 12, item 3).

The rule, from the issue and docs/fencing.md: fence_vmceph cuts a node off with one
host-wide blocklist entry ``IP:0/0`` per address, which the OSDs apply to every client
instance on that IP. So a client of a node that is lost or gone for Pacemaker (unclean,
left, fenced) whose address has that entry in the OSD map cannot write: it is GONE, and its
recovery is only the lock break, no new entry. Never on a record alone (a record outlives
its entries when 'on' removed them but not the record), never for a live member, this node,
a node in maintenance, a conflicting or an unknown address, and never on an entry that
expires before the one this agent would have added (blocklist_expire).

The oracles are written from that text, not from safety.py.
"""

import json
import time

import pytest

import fakes
from test_agent_flows import NODE2, World
from vmceph import safety
from vmceph.safety import (Facts, ImageFacts, Locker, Owner, Watcher, apply_ceph_fences,
                           decide_start, host_blocklisted)

NOW = 1_800_000_000.0
TEN_YEARS = 315360000.0
FAR = NOW + TEN_YEARS
IP = "10.0.0.3"
ADDR = "10.0.0.3:0/4242"                # a QEMU on node3
RECORD = {"node": "node3", "ips": [IP], "host_entries": [IP + ":0/0"], "time": NOW - 5}


def owner(state, source="node_addresses", node="node3"):
    return Owner(node, state, source)


def facts_with(owners, watching=True):
    img = ImageFacts("rbd/vm1", lock_tag="internal",
                     lockers=(Locker("client.7", "auto 11", ADDR),),
                     watchers=(Watcher(ADDR, 7, 11),) if watching else ())
    return Facts(True, "quorum a,b,c", (img,), owners, "node1", False,
                 membership_known=True)


# ------------------------------------------------------------------- the pure rule

def test_only_host_wide_entries_count():
    entries = [("10.0.0.3:0/0", FAR), ("10.0.0.4:0/4242", FAR),      # one instance
               ("10.0.0.5:6800/0", FAR),                             # one endpoint
               ("[fd00::6]:0/0", FAR), ("v2:10.0.0.7:0/0", NOW + 10)]
    assert host_blocklisted(entries) == {"10.0.0.3": FAR, "fd00::6": FAR,
                                         "10.0.0.7": NOW + 10}


# Written from the issue: lost or gone nodes only.
MAY_BE_GONE = {"unclean", "left", "gone"}


@pytest.mark.parametrize("state", safety.NODE_STATES)
def test_which_node_states_an_entry_turns_gone(state):
    owners = {IP: owner(state)}
    out = apply_ceph_fences(owners, {IP: FAR}, NOW, 3600, {"node3": RECORD})
    if state in MAY_BE_GONE:
        assert out[IP].state == "gone" and out[IP].host_blocklisted
        assert "10.0.0.3:0/0" in out[IP].note and "fence_vmceph" in out[IP].note
    else:
        assert out[IP] == owners[IP]


def test_a_record_alone_is_no_proof():
    """fence_vmceph's 'on' removes the entries, then the record; a failed removal of the
    record (only logged) leaves it behind. Without the entries in the OSD map, nothing."""
    owners = {IP: owner(safety.UNCLEAN)}
    assert apply_ceph_fences(owners, {}, NOW, 3600, {"node3": RECORD}) == owners
    # an entry of another address of the node does not cover this one
    assert apply_ceph_fences(owners, {"10.0.0.9": FAR}, NOW, 3600,
                             {"node3": dict(RECORD, ips=[IP, "10.0.0.9"])}) == owners


def test_entries_without_a_record_are_proof():
    """'profile rbd' may not read the record: the entries decide."""
    out = apply_ceph_fences({IP: owner(safety.LEFT)}, {IP: FAR}, NOW, 3600, {})
    assert out[IP].state == safety.GONE and out[IP].host_blocklisted


@pytest.mark.parametrize("until", [None, NOW + 3599, NOW - 1])
def test_an_entry_that_expires_too_soon_is_no_proof(until):
    owners = {IP: owner(safety.UNCLEAN)}
    assert apply_ceph_fences(owners, {IP: until}, NOW, 3600, {"node3": RECORD}) == owners


def test_name_resolution_alone_never_recovers_but_the_record_is_a_source():
    dns = {IP: owner(safety.UNCLEAN, source=safety.DNS_SOURCE)}
    without = apply_ceph_fences(dns, {IP: FAR}, NOW, 3600, {})
    assert decide_start(facts_with(without)).kind == safety.REFUSE
    assert "name resolution" in decide_start(facts_with(without)).summary()
    with_record = apply_ceph_fences(dns, {IP: FAR}, NOW, 3600, {"node3": RECORD})
    assert with_record[IP].source == safety.FENCE_RECORD_SOURCE
    assert decide_start(facts_with(with_record)).kind == safety.RECOVER_THEN_START
    # a record of another node naming this address is not this node's
    other = apply_ceph_fences(dns, {IP: FAR}, NOW, 3600, {"node3": dict(RECORD, node="node4")})
    assert other[IP].source == safety.DNS_SOURCE


@pytest.mark.parametrize("watching", [True, False])
def test_start_breaks_the_lock_of_a_writer_fenced_through_ceph_without_a_new_entry(watching):
    unclean = {IP: owner(safety.UNCLEAN)}
    before = decide_start(facts_with(unclean, watching))
    assert before.kind == safety.REFUSE and "not yet fenced" in before.summary()
    fenced = apply_ceph_fences(unclean, {IP: FAR}, NOW, 3600, {"node3": RECORD})
    v = decide_start(facts_with(fenced, watching))
    assert v.kind == safety.RECOVER_THEN_START, v
    (r,) = v.recoveries
    assert (r.addr, r.cookie, r.blocklisted) == (ADDR, "auto 11", True)
    assert "already blocklisted host-wide (10.0.0.3:0/0)" in r.describe()
    assert "fenced through Ceph" in r.describe()


def test_a_live_member_with_an_entry_is_still_refused():
    """A member may run the domain: an entry on its address is someone's mistake."""
    member = apply_ceph_fences({IP: owner(safety.MEMBER)}, {IP: FAR}, NOW, 3600,
                               {"node3": RECORD})
    v = decide_start(facts_with(member))
    assert v.kind == safety.REFUSE and "live cluster member" in v.summary()


# ------------------------------------------------------------------- property

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

IPS = ["10.0.0.%d" % i for i in range(1, 6)]


@hypothesis.given(
    states=st.fixed_dictionaries({ip: st.sampled_from(safety.NODE_STATES) for ip in IPS}),
    blocked=st.dictionaries(st.sampled_from(IPS),
                            st.one_of(st.none(), st.floats(NOW - 100, NOW + 2 * TEN_YEARS))),
    recorded=st.sets(st.sampled_from(IPS)),
    min_left=st.floats(0, 10 * 86400))
def test_property_gone_through_ceph_only_with_a_lasting_entry_of_a_lost_node(
        states, blocked, recorded, min_left):
    owners = {ip: Owner("n" + ip[-1], s, "node_addresses") for ip, s in states.items()}
    records = {"n" + ip[-1]: {"node": "n" + ip[-1], "ips": [ip]} for ip in recorded}
    out = apply_ceph_fences(owners, blocked, NOW, min_left, records)
    assert set(out) == set(owners)
    for ip in IPS:
        proof = (states[ip] in MAY_BE_GONE and blocked.get(ip) is not None
                 and blocked[ip] >= NOW + min_left)
        if proof:
            assert out[ip].state == safety.GONE and out[ip].host_blocklisted
        else:
            assert out[ip] == owners[ip]
    # and the decision then never skips the blocklist of a client without such an entry
    for ip in IPS:
        img = ImageFacts("rbd/x", lock_tag="internal",
                         lockers=(Locker("client.1", "auto 1", ip + ":0/99"),),
                         watchers=(Watcher(ip + ":0/99", 1, 1),))
        f = Facts(True, "q", (img,), out, "node0", False, membership_known=True)
        for r in decide_start(f).recoveries:
            if r.blocklisted:
                assert blocked.get(ip) is not None and blocked[ip] >= NOW + min_left


# ------------------------------------------------------------------- the agent, on fakes

@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def fence_node2(w, record=True, entry=True):
    """What fence_vmceph off leaves in Ceph for node2: its host-wide entry, its record."""
    host = NODE2 + ":0/0"
    if entry:
        ret, _, _ = w.ceph._blocklist({"blocklistop": "add", "addr": host,
                                       "expire": TEN_YEARS})
        assert ret == 0
    if record:
        w.ceph.config_keys["vmceph/fence/node2"] = json.dumps(
            {"node": "node2", "ips": [NODE2], "host_entries": [host], "time": time.time()})
    w.ceph.commands.clear()


def test_agent_start_on_a_node_fenced_through_ceph_only_breaks_the_lock(w):
    qemu = w.holder("rbd/vm1-root", NODE2)   # its watch lingers after the fence
    fence_node2(w)
    assert w.start(membership="node1=member node2=unclean") == 0, w.err
    assert [c for c in w.ceph.commands if c.get("blocklistop") == "add"] == [], \
        "no new entry: node2 is fenced already"
    assert w.ceph.image("rbd/vm1-root").lock_breaks == [(0, qemu.addr)]
    assert w.ceph.unsafe_breaks == []        # broken on a map that carries the fence
    assert w.node1.running("vm1")
    log = w.logfile.read_text()
    assert "fenced through Ceph: host-wide entry %s:0/0 in the OSD blocklist" % NODE2 in log
    assert "fence_vmceph fenced it at" in log
    assert "not blocklisting %s again" % qemu.addr in log


def test_agent_start_without_the_record_cap_still_sees_the_entries(w):
    qemu = w.holder("rbd/vm1-root", NODE2)
    fence_node2(w)
    w.ceph.caps = "rbd"                      # config-key refused, blocklist ls allowed
    assert w.start(membership="node1=member node2=unclean") == 0, w.err
    assert w.ceph.image("rbd/vm1-root").lock_breaks == [(0, qemu.addr)]
    assert "fenced through Ceph" in w.logfile.read_text()


def test_agent_start_refused_on_a_record_whose_entries_are_gone(w):
    """'on' removed the entries but the record stayed: node2 is not fenced."""
    w.holder("rbd/vm1-root", NODE2)
    fence_node2(w, record=True, entry=False)
    assert w.start(membership="node1=member node2=unclean") == 1
    assert "not yet fenced" in w.reason and "node2" in w.reason
    assert w.ceph.image("rbd/vm1-root").lock_breaks == []
    assert not w.node1.running("vm1")


def test_agent_start_with_an_unrelated_node_reads_no_blocklist(w):
    """A start with no client on a lost node pays nothing for this rule."""
    assert w.start() == 0, w.err
    assert "osd blocklist ls" not in w.ceph.mon_prefixes()


def test_blocklist_listing_with_expiries():
    """'osd blocklist ls' of 16.2.15: entries then ranges, two arrays back to back."""
    from vmceph.cephfence import parse_blocklist_until, parse_until
    out = ('[{"addr":"10.0.0.3:0/0","until":"2036-11-29T19:02:33.123456+0000"},'
           '{"addr":"10.0.0.4:0/77","until":"bogus"}][{"range":"10.9.9.9:0/32"}]')
    assert parse_blocklist_until(out) == [("10.0.0.3:0/0", 2111598153.123456),
                                          ("10.0.0.4:0/77", None)]
    assert parse_blocklist_until("") == []
    assert parse_until("2036-11-29T19:02:33Z") == 2111598153.0
    assert parse_until("2036-11-29T19:02:33") is None     # no zone: unknown


# ------------------------------------------------------------------- CephHealth

def test_cephhealth_turns_red_on_a_node_fenced_through_ceph(tmp_path, monkeypatch):
    """Its own address host-blocklisted (fenced by fence_vmceph, not unfenced): quorum and
    health look fine from there (monitors ignore the blocklist), but no I/O can succeed, so
    this node, and only this node, is red; once the entry is gone it is green again. An
    instance entry of one of its clients (a recovered VM's old QEMU) is not a fence."""
    from test_cephhealth import Node
    node = Node(tmp_path, monkeypatch)
    try:
        assert node.run("start") == 0, node.err
        assert node.published() == "green"
        node.ceph._blocklist({"blocklistop": "add", "addr": "10.252.0.1:0/777",
                              "expire": 3600})
        assert node.run("monitor", interval=10000) == 0
        assert node.published() == "green"
        node.ceph._blocklist({"blocklistop": "add", "addr": "10.252.0.1:0/0",
                              "expire": TEN_YEARS})
        assert node.run("monitor", interval=10000) == 0, node.err
        assert node.published() == "red"
        assert "fenced through Ceph (10.252.0.1:0/0 in the OSD blocklist)" in node.err
        assert "stonith_admin --unfence" in node.err
        # and it asks Pacemaker to unfence it (see the next test)
        assert node.published("#node-unfenced") == "0"
        del node.ceph.blocklist["10.252.0.1:0/0"]
        assert node.run("monitor", interval=10000) == 0
        assert node.published() == "green"
    finally:
        node.ceph.close()


def test_cephhealth_asks_pacemaker_to_unfence_a_node_fenced_through_ceph(tmp_path,
                                                                          monkeypatch):
    """A node fenced alive (corosync-only cut) rejoins with its stack running and the
    #node-unfenced of an earlier unfencing in its attrd: Pacemaker then never unfences it
    (lab, issue 12). CephHealth on that node sets #node-unfenced=0, which makes Pacemaker's
    scheduler stop the node's resources and unfence it; only on a host-wide entry of its
    own address, once (not again while attrd holds 0), and never on a healthy node."""
    from test_cephhealth import Node
    node = Node(tmp_path, monkeypatch)

    def unfence_requests():
        return [c for c in node.attrd() if c[:2] == ["-n", "#node-unfenced"] and "-U" in c]
    try:
        assert node.run("start") == 0, node.err
        node.ceph._blocklist({"blocklistop": "add", "addr": "10.252.0.1:0/777",
                              "expire": 3600})          # a client instance: not a fence
        assert node.run("monitor", interval=10000) == 0
        assert unfence_requests() == []
        node.ceph._blocklist({"blocklistop": "add", "addr": "10.252.0.1:0/0",
                              "expire": TEN_YEARS})
        assert node.run("monitor", interval=10000) == 0, node.err
        assert unfence_requests() == [["-n", "#node-unfenced", "-U", "0"]]
        assert "asked Pacemaker to unfence it" in node.err
        # attrd (stateful: fakes.stateful_attrd) now answers 0: no second request
        assert node.attrs("#node-unfenced") == {"node1": "0"}

        def queries():
            return [c for c in node.bin.calls("attrd_updater")
                    if c[1:4] == ["-n", "#node-unfenced", "-Q"]]
        asked = len(queries())
        assert node.run("monitor", interval=10000) == 0, node.err
        assert len(queries()) == asked + 1
        assert len(unfence_requests()) == 1, unfence_requests()
    finally:
        node.ceph.close()
