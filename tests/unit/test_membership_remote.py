"""pacemaker_remote nodes as members: states and start decisions from REAL captures.

tests/unit/data/pacemaker/remote1-*.xml were captured (crm_mon -1 -A, cibadmin -Q -o nodes
/ -o status, stonith_admin --history '*' --verbose, all --output-as=xml where they have
it) on `python3 -m vmlab up --nodes 3 --pacemaker --remotes 1 --node-prefix node`
(Pacemaker 2.1.5): three full nodes and the compute-only remote1 at 10.163.0.4, which
publishes that address as the permanent attribute vmceph-ceph-addrs (as CephHealth does).
The production path reads them (facts.gather_with -> cluster.Cluster -> owners_map ->
safety.decide_start), no ``membership`` parameter.

The oracle is issue 15's: a remote node's client is a member's client (online, unclean,
fenced), never UNKNOWN (which the blocklist policy would fence while it writes), and an
unclean remote node is never GONE without Pacemaker's fencing proof.
"""

import types

import pytest

import fakes  # noqa: F401  (the shared fakes; World below uses them)
from test_membership_captured import World, _stub
from vmceph import cluster, facts, safety
from vmceph.ocf import Deadline
from vmceph.safety import GONE, LEFT, MEMBER, UNCLEAN

REMOTE_IP = "10.163.0.4"        # remote1 in the captures (its vmceph-ceph-addrs)
SPEC = "rbd/vm1"

STATES = {
    "remote1-online": MEMBER,
    # powered off; crm_mon still says unclean="true" although the history already holds
    # the fence (captured 1 s after the crash): Pacemaker's own view wins, it stays unclean
    "remote1-unclean": UNCLEAN,
    "remote1-fenced": GONE,
    "remote1-rejoined": MEMBER,
    # its connection resource disabled: it left cleanly after the earlier fence
    "remote1-left-clean": LEFT,
}


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    monkeypatch.setattr(facts, "WATCHLESS_RETRY_CAP_S", 0.0)
    yield world
    world.ceph.close()


@pytest.mark.parametrize("state", sorted(STATES))
def test_remote_node_states_from_captured_output(w, state):
    _stub(w.bin, state)
    nodes = cluster.Cluster(Deadline(20)).nodes()
    assert nodes["remote1"].state == STATES[state]
    assert nodes["remote1"].kind == "remote"
    assert {n: nodes[n].kind for n in ("node1", "node2", "node3")} == dict.fromkeys(
        ("node1", "node2", "node3"), "member")
    # the address it published survives its fencing (CIB <nodes>, not crm_mon)
    assert nodes["remote1"].attributes.get(cluster.ADDR_ATTRIBUTE) == REMOTE_IP


def test_fenced_remote_node_says_so(w):
    _stub(w.bin, "remote1-fenced")
    info = cluster.Cluster(Deadline(20)).nodes()["remote1"]
    assert info.note == "pacemaker_remote node, fenced at 2026-12-01 19:30:29Z"


# state, watch still there?, verdict under BOTH unknown-client policies
CASES = [
    ("remote1-online", True, safety.REFUSE),
    ("remote1-online", False, safety.REFUSE),
    ("remote1-unclean", True, safety.REFUSE),
    ("remote1-unclean", False, safety.REFUSE),
    ("remote1-fenced", True, safety.RECOVER_THEN_START),
    ("remote1-fenced", False, safety.RECOVER_THEN_START),
    ("remote1-rejoined", True, safety.REFUSE),
    ("remote1-left-clean", True, safety.REFUSE),
    ("remote1-left-clean", False, safety.RECOVER_THEN_START),
]


@pytest.mark.parametrize("policy", ["refuse", "blocklist"])
@pytest.mark.parametrize("state,watch,kind", CASES,
                         ids=["%s-%s" % (s, "watch" if wt else "nowatch")
                              for s, wt, _ in CASES])
def test_start_decision_with_a_writer_on_the_remote_node(w, state, watch, kind, policy):
    """The address is known only from remote1's published attribute: were the remote node
    dropped from the membership, it would be UNKNOWN, and the blocklist policy would fence
    a live remote node's QEMU (online, unclean) while it writes."""
    qemu = w.ceph.qemu_writes(SPEC, REMOTE_IP)
    if not watch:
        w.ceph.expire_watches(qemu.addr)
    g, v = w.decide(state, policy=policy)
    with g:
        owner = g.facts.owners[REMOTE_IP]
        assert owner.node == "remote1" and owner.state == STATES[state]
        assert v.kind == kind, v.reasons
        if kind == safety.RECOVER_THEN_START:
            assert [r.addr for r in v.recoveries] == [qemu.addr]
            assert [r.node for r in v.recoveries] == ["remote1"]
            facts.recover(types.SimpleNamespace(params=w.params, log=w.log,
                                                deadline=Deadline(20)),
                          g.session, v.recoveries)
            assert w.ceph.is_blocklisted(qemu.addr)
        else:
            assert w.ceph.blocklist == {}
    if state == "remote1-fenced":
        assert "pacemaker_remote node, fenced at" in v.summary()


def test_unclean_remote_node_stays_refused_though_the_history_shows_the_fence(w):
    """remote1-unclean's history already holds the successful fence: crm_mon's
    unclean="true" still refuses (a proof applies to offline clean nodes only)."""
    qemu = w.ceph.qemu_writes(SPEC, REMOTE_IP)
    g, v = w.decide("remote1-unclean", policy="blocklist")
    with g:
        assert v.kind == safety.REFUSE and "lost but not yet fenced" in v.summary()
    assert not w.ceph.is_blocklisted(qemu.addr)


@pytest.mark.parametrize("broken", ["history-fails", "history-empty", "status-fails"])
def test_fenced_remote_node_without_a_fencing_proof_is_not_gone(w, broken):
    """Offline and clean (crm_mon, after the fence), but the proof cannot be read: the
    remote node is LEFT, and its client with a live watch is refused."""
    _stub(w.bin, "remote1-fenced")
    if broken == "history-fails":
        w.bin.add("stonith_admin", "echo 'cannot connect to the fencer' >&2; exit 102")
    elif broken == "history-empty":
        w.bin.add("stonith_admin", "cat '%s'" % (
            fakes_data("remote1-online.stonith_history.xml")))
    else:
        w.bin.add("cibadmin", "case \"$*\" in *nodes*) cat '%s';; *) exit 1;; esac"
                  % fakes_data("remote1-fenced.cib_nodes.xml"))
    nodes = cluster.Cluster(Deadline(20)).nodes()
    assert nodes["remote1"].state == LEFT
    qemu = w.ceph.qemu_writes(SPEC, REMOTE_IP)
    g = facts.gather_with(w.params, Deadline(30), w.log, w.dom, False, on_node="node1")
    with g:
        v = safety.decide_start(g.facts)
        assert g.facts.owners[REMOTE_IP].state == LEFT
        assert v.kind == safety.REFUSE, v.reasons
    assert not w.ceph.is_blocklisted(qemu.addr)


def test_node_addresses_naming_the_remote_node(w):
    """node_addresses may name a remote node: its state is Pacemaker's, not UNKNOWN."""
    w.params.node_addresses += " remote1=10.163.0.44"
    qemu = w.ceph.qemu_writes(SPEC, "10.163.0.44")
    g, v = w.decide("remote1-online", policy="blocklist")
    with g:
        assert g.facts.owners["10.163.0.44"].state == MEMBER
        assert v.kind == safety.REFUSE
    g, v = w.decide("remote1-fenced", policy="refuse")
    with g:
        assert g.facts.owners["10.163.0.44"].state == GONE
        assert [r.addr for r in v.recoveries] == [qemu.addr]


def fakes_data(name):
    from test_membership_captured import DATA
    return str(DATA / name)
