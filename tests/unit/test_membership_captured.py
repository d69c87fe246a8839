"""Membership and recovery through the production path, fed with Pacemaker's real output.

tests/unit/data/pacemaker/ holds crm_mon, cibadmin and stonith_admin XML captured from the
three-node lab in seven cluster states (see its README.md). Stub programs answer with them,
and the agent's own code asks them (facts.gather_with -> cluster.Cluster -> owners_map),
inspects a fake Ceph and decides (safety.decide_start), then recovers (facts.recover): no
test-only ``membership`` parameter on this path.
"""

import logging
import types
from pathlib import Path

import pytest

import fakes
from vmceph import cluster, facts, safety
from vmceph.ocf import Deadline
from vmceph.safety import GONE, LEFT, LOCAL, MEMBER, UNCLEAN

DATA = Path(__file__).parent / "data" / "pacemaker"
NODE_IP = {"node1": "10.252.0.1", "node2": "10.252.0.2", "node3": "10.252.0.3"}
SPEC = "rbd/vm1"


def _stub(bin_, state, crm_mon_rc=0):
    files = {k: DATA / ("%s.%s.xml" % (state, k))
             for k in ("crm_mon", "cib_nodes", "cib_status", "stonith_history")}
    if crm_mon_rc:
        bin_.add("crm_mon", "echo 'crm_mon: Error: cluster is not available on this node' >&2;"
                 " exit %d" % crm_mon_rc)
    else:
        bin_.add("crm_mon", "cat '%s'" % files["crm_mon"])
    bin_.add("cibadmin", 'case "$*" in *nodes*) cat \'%s\';; *status*) cat \'%s\';; '
             '*) exit 1;; esac' % (files["cib_nodes"], files["cib_status"]))
    bin_.add("stonith_admin", "cat '%s'" % files["stonith_history"])
    bin_.add("crm_node", "echo node1")


class World:
    def __init__(self, tmp_path, monkeypatch):
        self.ceph = fakes.FakeCeph(client_ip=NODE_IP["node1"])
        self.ceph.add_image(SPEC)
        fakes.install(monkeypatch, self.ceph)
        monkeypatch.setattr(cluster, "resolve", lambda name, timeout: [])
        self.bin = fakes.StubBin(tmp_path / "bin", monkeypatch)
        conf = tmp_path / "ceph.conf"
        conf.write_text("[global]\n")
        self.params = types.SimpleNamespace(
            ceph_conf=str(conf), ceph_user="vmceph", ceph_keyring="", membership="",
            node_addresses=" ".join("%s=%s" % kv for kv in NODE_IP.items()),
            unknown_client_policy="refuse", blocklist_expire=600)
        self.dom = types.SimpleNamespace(guarded_disks=[types.SimpleNamespace(spec=SPEC,
                                                                          krbd_client=None)])
        self.log = logging.getLogger("test-membership")

    def decide(self, state, crm_mon_rc=0, policy="refuse"):
        _stub(self.bin, state, crm_mon_rc)
        self.params.unknown_client_policy = policy
        g = facts.gather_with(self.params, Deadline(30), self.log, self.dom, False,
                              on_node="node1")
        return g, safety.decide_start(g.facts)


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.ceph.close()


STATES = {
    "all-online": {"node1": MEMBER, "node2": MEMBER, "node3": MEMBER},
    "node3-unclean": {"node3": UNCLEAN},
    "node3-fenced": {"node3": GONE},
    "node3-rejoined": {"node3": MEMBER},
    "node2-maintenance": {"node2": MEMBER},
    "node2-maintenance-stopped": {"node2": MEMBER},      # online="true" pending="true"
    "node3-left-clean": {"node3": LEFT, "node2": MEMBER},  # fenced earlier, active since
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_node_states_from_captured_output(w, state):
    _stub(w.bin, state)
    nodes = cluster.Cluster(Deadline(20)).nodes()
    got = {n: nodes[n].state for n in STATES[state]}
    assert got == STATES[state]


# state, where the holder lives, its watch still there?, expected verdict
CASES = [
    ("all-online", "node2", True, safety.REFUSE),
    ("all-online", "node2", False, safety.REFUSE),       # no watch on a member: refused
    ("node3-unclean", "node3", True, safety.REFUSE),
    ("node3-unclean", "node3", False, safety.REFUSE),
    ("node3-fenced", "node3", True, safety.RECOVER_THEN_START),
    ("node3-fenced", "node3", False, safety.RECOVER_THEN_START),
    ("node3-rejoined", "node3", True, safety.REFUSE),
    ("node2-maintenance-stopped", "node2", True, safety.REFUSE),
    ("node2-maintenance-stopped", "node2", False, safety.REFUSE),
    ("node3-left-clean", "node3", True, safety.REFUSE),  # left, but a live watch
    ("node3-left-clean", "node3", False, safety.RECOVER_THEN_START),
]


@pytest.mark.parametrize("state,node,watch,kind", CASES,
                         ids=["%s-%s-%s" % (s, n, "watch" if wt else "nowatch")
                              for s, n, wt, _ in CASES])
def test_start_decision_on_captured_membership(w, monkeypatch, state, node, watch, kind):
    monkeypatch.setattr(facts, "WATCHLESS_RETRY_CAP_S", 0.0)
    qemu = w.ceph.qemu_writes(SPEC, NODE_IP[node])
    if not watch:
        w.ceph.expire_watches(qemu.addr)
    g, v = w.decide(state)
    with g:
        assert g.facts.membership_known
        assert v.kind == kind, v.reasons
        if kind == safety.RECOVER_THEN_START:
            assert [r.addr for r in v.recoveries] == [qemu.addr]
            facts.recover(types.SimpleNamespace(params=w.params, log=w.log,
                                                deadline=Deadline(20)),
                          g.session, v.recoveries)
            assert w.ceph.is_blocklisted(qemu.addr)
            assert w.ceph.image(SPEC).lock_breaks == [(0, qemu.addr)]
            assert w.ceph.unsafe_breaks == []
        else:
            assert w.ceph.blocklist == {}


def test_crm_mon_failing_means_no_recovery_even_under_the_blocklist_policy(w):
    """Membership cannot be read: every address is unknown, and nothing is recovered."""
    qemu = w.ceph.qemu_writes(SPEC, "192.0.2.50")      # unknown address, live watch
    g, v = w.decide("all-online", crm_mon_rc=102, policy="blocklist")
    with g:
        assert not g.facts.membership_known
        assert v.kind == safety.REFUSE and "membership cannot be read" in v.summary()
    assert not w.ceph.is_blocklisted(qemu.addr)


def test_unknown_address_blocklisted_under_the_policy_when_membership_is_known(w):
    qemu = w.ceph.qemu_writes(SPEC, "192.0.2.50")
    g, v = w.decide("all-online", policy="blocklist")
    with g:
        assert v.kind == safety.RECOVER_THEN_START
        assert [r.addr for r in v.recoveries] == [qemu.addr]


def test_fqdn_in_node_addresses_is_unknown_not_gone(w):
    """issue 10: node_addresses naming 'node2.example.com' made node2's live QEMU GONE."""
    w.params.node_addresses = "node2.example.com=10.252.0.2"
    w.ceph.qemu_writes(SPEC, "10.252.0.2")
    g, v = w.decide("all-online", policy="refuse")
    with g:
        owner = g.facts.owners["10.252.0.2"]
        assert owner.state == safety.UNKNOWN and owner.node == "node2.example.com"
        assert v.kind == safety.REFUSE
    g, v = w.decide("all-online", policy="blocklist")
    with g:
        # under the blocklist policy an unknown name is still "unknown", so it may be
        # recovered: but never as GONE, and the reason says which name is not known
        assert "no node node2.example.com" in g.facts.owners["10.252.0.2"].note


def test_local_node_is_local(w):
    _stub(w.bin, "all-online")
    g = facts.gather_with(w.params, Deadline(30), w.log, w.dom, False, on_node="node1")
    with g:
        assert g.facts.owners["10.252.0.1"].state == LOCAL
