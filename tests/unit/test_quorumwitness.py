"""quorumwitness: a node that cannot reach a Ceph monitor quorum is red only on a peer's
word that the outage is its own; a quorum lost for everybody leaves every node yellow.

The oracle of the model test is the rule itself, stated on the model's history (not on
the code's attributes): a node may be red at a monitor only if some *other* node reached a
quorum, in a monitor that began after this node's current outage began. And the point of
it all: it does turn red, once a peer that reaches a quorum has run a monitor between two
of its own.
"""

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmceph import quorumwitness as qw
from vmceph.cluster import ClusterError, parse_attrd_query_all


# ------------------------------------------------------------------------- the step itself

def test_reached_deletes_its_own_token_and_acknowledges_the_peers():
    vouchers, writes = qw.step("n1", True, {"n1": "t1", "n2": "t2", "n3": "t3"}, {})
    assert vouchers is None
    assert writes == [("lost", None), ("seen", "n2=t2 n3=t3")]


def test_reached_writes_nothing_in_steady_state():
    assert qw.step("n1", True, {}, {}) == (None, [])
    # an acknowledgement already published is not written again
    assert qw.step("n1", True, {"n2": "t2"}, {"n1": "n2=t2"}) == (None, [])


def test_first_failure_publishes_a_token_and_is_yellow():
    vouchers, writes = qw.step("n1", False, {}, {}, token="tok")
    assert vouchers == [] and writes == [("lost", "tok")]


def test_the_token_is_kept_while_the_outage_lasts():
    vouchers, writes = qw.step("n1", False, {"n1": "old"}, {}, token="new")
    assert vouchers == [] and writes == []


def test_red_only_on_an_acknowledgement_of_the_current_token():
    lost = {"n1": "t-now"}
    assert qw.step("n1", False, lost, {"n2": "n1=t-now n3=x"})[0] == ["n2"]
    # an acknowledgement of an earlier outage of n1 vouches for nothing
    assert qw.step("n1", False, lost, {"n2": "n1=t-before"})[0] == []
    # nor does n1's own attribute, nor a malformed one
    assert qw.step("n1", False, lost, {"n1": "n1=t-now", "n3": "garbage n1="})[0] == []


def test_names_follow_the_health_attribute():
    assert qw.names("#health-ceph") == ("vmceph-quorum-lost-health-ceph",
                                        "vmceph-quorum-seen-health-ceph")
    assert qw.names("#health-a") != qw.names("#health-b")


def test_tokens_differ():
    assert len({qw.new_token(now=1) for _ in range(50)}) == 50


@given(st.dictionaries(st.sampled_from(["n1", "n2", "n3"]),
                       st.text(alphabet="abc-0123456789", min_size=1, max_size=6)))
def test_seen_round_trips(acks):
    assert qw.parse_seen(qw.format_seen(acks)) == acks


# ----------------------------------------------------------------- attrd's answer, parsed

def test_parse_attrd_query_all():
    xml = """<pacemaker-result api-version="2.25" request="attrd_updater -n x -Q -A">
      <attribute name="x" value="a b" host="node1"/>
      <attribute name="x" value="" host="node2"/>
      <attribute name="x" value="c" host="node3"/>
      <status code="0" message="OK"/>
    </pacemaker-result>"""
    assert parse_attrd_query_all(xml, "x") == {"node1": "a b", "node3": "c"}


class _R:
    def __init__(self, rc, out="", err=""):
        self.rc, self.out, self.err = rc, out, err


def _cluster(result):
    from vmceph.cluster import Cluster
    from vmceph.ocf import Deadline
    return Cluster(Deadline(10), runner=lambda argv, timeout, env=None, log=None: result)


def test_query_attribute_all_unknown_attribute_is_empty():
    # attrd_updater 2.1.5 with no node having it (lab): rc 78 "attribute does not exist"
    out = ('<pacemaker-result api-version="2.25"><status code="78" message="Invalid '
           'configuration"/></pacemaker-result>')
    assert _cluster(_R(78, out)).query_attribute_all("x") == {}


def test_query_attribute_all_attrd_down_raises():
    out = ('<pacemaker-result api-version="2.25"><status code="102" message="Not '
           'connected"/></pacemaker-result>')
    with pytest.raises(ClusterError):
        _cluster(_R(102, out, "Could not connect to attrd")).query_attribute_all("x")


# --------------------------------------------------------------------- the protocol, modelled

NODES = ["n1", "n2", "n3", "n4"]


class Protocol(RuleBasedStateMachine):
    """Nodes run monitors in any order while the test cuts nodes off Ceph, heals them, and
    takes the monitors' quorum away and back. attrd is one shared dict (it replicates over
    corosync, which stays up). Time is a count of events.

    A monitor is not atomic: it reads attrd (both attributes, as CephHealth._Witness does),
    then asks Ceph for a while, then judges and writes; anything may happen in between
    (``begin``/``end``). Its ask reaches a quorum only if the node could reach one for the
    whole ask (a quorum that returns while an ask is timing out does not save it)."""

    def __init__(self):
        super().__init__()
        self.attrs = {"lost": {}, "seen": {}}
        self.quorum = True
        self.cut = set()
        self.t = 0
        self.outage_since = {}     # node -> t its current outage began (model's own record)
        self.reached = {n: [] for n in NODES}   # node -> [(began, ended)] of reaching asks
        self.asking = {}           # node -> (began, lost, seen, reachable throughout)
        self.color = {}
        self.tokens = 0

    def reaches(self, n):
        return self.quorum and n not in self.cut

    def _tick(self):
        self.t += 1
        for n, (began, lost, seen, ok) in list(self.asking.items()):
            self.asking[n] = (began, lost, seen, ok and self.reaches(n))

    def begin(self, n):
        self._tick()
        self.asking[n] = (self.t, dict(self.attrs["lost"]), dict(self.attrs["seen"]),
                          self.reaches(n))

    def end(self, n):
        self._tick()
        began, lost, seen, reached = self.asking.pop(n)
        self.tokens += 1
        vouchers, writes = qw.step(n, reached, lost, seen, token="tok%d" % self.tokens)
        for which, value in writes:
            if value is None:
                self.attrs[which].pop(n, None)
            else:
                self.attrs[which][n] = value
        if reached:
            self.reached[n].append((began, self.t))
            self.outage_since.pop(n, None)
            self.color[n] = "ok"
        else:
            self.outage_since.setdefault(n, began)
            self.color[n] = "red" if vouchers else "yellow"
            if vouchers:
                # the oracle: another node reached a quorum in an ask that began after this
                # node's outage began and was over before this node's failing ask began
                since = self.outage_since[n]
                assert any(b > since and e < began for p in NODES if p != n
                           for b, e in self.reached[p]), \
                    (n, since, began, self.reached, self.attrs)
        return self.color[n]

    def monitor(self, n):
        if n in self.asking:
            self.end(n)
        self.begin(n)
        return self.end(n)

    @precondition(lambda self: len(self.asking) < len(NODES))
    @rule(n=st.sampled_from(NODES))
    def begin_monitor(self, n):
        if n not in self.asking:
            self.begin(n)

    @precondition(lambda self: self.asking)
    @rule(data=st.data())
    def end_monitor(self, data):
        self.end(data.draw(st.sampled_from(sorted(self.asking))))

    @rule(n=st.sampled_from(NODES))
    def run_monitor(self, n):
        self.monitor(n)

    @rule(n=st.sampled_from(NODES))
    def cut_off(self, n):
        self.cut.add(n)
        self._tick()

    @rule(n=st.sampled_from(NODES))
    def heal(self, n):
        self.cut.discard(n)

    @rule()
    def lose_quorum(self):
        self.quorum = False
        self._tick()

    @rule()
    def regain_quorum(self):
        self.quorum = True

    @precondition(lambda self: self.quorum and len(self.cut) < len(NODES))
    @rule(n=st.sampled_from(NODES), data=st.data())
    def a_node_cut_alone_turns_red(self, n, data):
        """Liveness: n cut off while a peer reaches a quorum: n, the peer, n again -> red."""
        self.cut.add(n)
        self._tick()
        if len(self.cut) == len(NODES):
            self.cut.discard(n)
            return
        peer = data.draw(st.sampled_from(sorted(set(NODES) - self.cut)))
        self.monitor(n)
        self.monitor(peer)
        assert self.monitor(n) == "red", (n, peer, self.attrs)

    @invariant()
    def nobody_red_while_nobody_reached_since(self):
        # (also checked at each red verdict above) no red at all while the quorum is lost
        # for everybody and no node reached one after any current outage began
        if not self.quorum:
            for n, c in self.color.items():
                if c == "red":
                    since = self.outage_since.get(n)
                    assert since is not None and any(
                        b > since for p in NODES if p != n for b, _ in self.reached[p])


Protocol.TestCase.settings = settings(max_examples=300, stateful_step_count=40,
                                      deadline=None)
TestProtocol = Protocol.TestCase


def test_quorum_lost_for_everybody_leaves_every_node_yellow():
    """The soak's fault (seed 1203, fault 5) as a fixed history: all green, then nobody
    reaches a quorum for many monitors: nobody is ever red."""
    m = Protocol()
    for n in NODES:
        m.monitor(n)
    m.lose_quorum()
    for _ in range(5):
        for n in NODES:
            assert m.monitor(n) == "yellow"
    m.regain_quorum()
    for n in NODES:
        assert m.monitor(n) == "ok"
    assert m.attrs["lost"] == {}


def test_a_quorum_that_returns_during_an_ask_makes_nobody_red():
    """The 15-fault soak's fault 8 (seed 1204) as a fixed history: n1's ask begins while
    the quorum is lost, the quorum returns, n2 reaches it and acknowledges n1's token, and
    only then does n1's ask fail. n1 is yellow: the acknowledgement came after n1 asked.
    Its next ask, if it fails too, is red: n2 had reached a quorum before it began."""
    m = Protocol()
    for n in NODES:
        m.monitor(n)
    m.lose_quorum()
    assert m.monitor("n1") == "yellow"          # the token is out
    m.begin("n1")
    m.regain_quorum()
    assert m.monitor("n2") == "ok"
    assert "n1=" in m.attrs["seen"]["n2"]        # n2 acknowledged n1's outage
    assert m.end("n1") == "yellow"
    m.cut_off("n1")
    assert m.monitor("n1") == "red"
