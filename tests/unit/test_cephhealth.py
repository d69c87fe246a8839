"""ocf:vmceph:CephHealth: the color table, and the agent through ocf.run with a fake Ceph
and a stub ``attrd_updater`` first on PATH that records every call."""

import io

import pytest

import fakes
from vmceph import ocf
from vmceph import quorumwitness
from vmceph.cephhealth import (GREEN, RED, YELLOW, CephHealth, color_for,
                               parse_check_colors)

WARN_CHECK = {"severity": "HEALTH_WARN", "summary": "1 osds down"}
ERR_CHECK = {"severity": "HEALTH_ERR", "summary": "Reduced data availability"}


# ----------------------------------------------------------------------------- color table

@pytest.mark.parametrize("reachable,quorum,status,checks,pgs,kw,color,why", [
    # what stops this node's I/O is red, whatever the rest says
    (False, False, "HEALTH_OK", {}, [], {}, RED, "Ceph unreachable from this node"),
    (False, True, "HEALTH_OK", {}, [], {"warn_color": GREEN}, RED, "unreachable"),
    (True, False, "HEALTH_OK", {}, [], {}, RED, "no monitor quorum"),
    (True, False, "HEALTH_OK", {}, [], {"check_colors": {"MON_DOWN": "green"}}, RED,
     "no monitor quorum"),
    # inactive PGs of a watched pool are cluster-wide: yellow at least, never red by
    # themselves (issue 13: red on every node at once stops every VM)
    (True, True, "HEALTH_OK", {}, ["rbd:2.1"], {}, YELLOW, "PGs not active: rbd:2.1"),
    (True, True, "HEALTH_WARN", {"PG_AVAILABILITY": WARN_CHECK}, ["rbd:2.1", "rbd:2.2"],
     {"check_colors": {"PG_AVAILABILITY": "green"}}, YELLOW, "rbd:2.1, rbd:2.2"),
    (True, True, "HEALTH_ERR", {"PG_AVAILABILITY": ERR_CHECK}, ["rbd:2.1"],
     {"err_color": RED}, RED, "PG_AVAILABILITY=red"),
    # healthy
    (True, True, "HEALTH_OK", {}, [], {}, GREEN, "HEALTH_OK"),
    (True, True, "HEALTH_OK", None, [], {}, GREEN, "HEALTH_OK"),
    # HEALTH_WARN: warn_color
    (True, True, "HEALTH_WARN", {"OSD_DOWN": WARN_CHECK}, [], {}, YELLOW, "OSD_DOWN=yellow"),
    (True, True, "HEALTH_WARN", {"OSD_DOWN": WARN_CHECK}, [], {"warn_color": GREEN}, GREEN,
     "HEALTH_WARN (OSD_DOWN=green)"),
    (True, True, "HEALTH_WARN", {"OSD_DOWN": WARN_CHECK}, [], {"warn_color": RED}, RED,
     "OSD_DOWN=red"),
    (True, True, "HEALTH_WARN", {}, [], {}, YELLOW, "HEALTH_WARN (no checks)"),
    # HEALTH_ERR: err_color, yellow by default (cluster-wide health)
    (True, True, "HEALTH_ERR", {"PG_AVAILABILITY": ERR_CHECK}, [], {}, YELLOW,
     "PG_AVAILABILITY=yellow"),
    (True, True, "HEALTH_ERR", {"PG_AVAILABILITY": ERR_CHECK}, [], {"err_color": RED}, RED,
     "PG_AVAILABILITY=red"),
    (True, True, "HEALTH_ERR", {}, [], {"err_color": RED}, RED, "HEALTH_ERR (no checks)"),
    (True, True, "HEALTH_ERR", {}, [], {}, YELLOW, "no checks"),
    # the worst check wins
    (True, True, "HEALTH_ERR", {"OSD_DOWN": WARN_CHECK, "PG_AVAILABILITY": ERR_CHECK}, [],
     {"warn_color": GREEN, "err_color": RED}, RED, "OSD_DOWN=green, PG_AVAILABILITY=red"),
    (True, True, "HEALTH_ERR", {"OSD_DOWN": WARN_CHECK, "PG_AVAILABILITY": ERR_CHECK}, [],
     {"warn_color": YELLOW, "err_color": GREEN}, YELLOW, "OSD_DOWN=yellow"),
    # check_colors overrides the severity, both ways
    (True, True, "HEALTH_WARN", {"OSD_DOWN": WARN_CHECK, "MON_DOWN": WARN_CHECK}, [],
     {"check_colors": {"OSD_DOWN": "green", "MON_DOWN": "green"}}, GREEN,
     "MON_DOWN=green, OSD_DOWN=green"),
    (True, True, "HEALTH_WARN", {"OSD_DOWN": WARN_CHECK}, [],
     {"check_colors": {"OSD_DOWN": "red"}, "warn_color": GREEN}, RED, "OSD_DOWN=red"),
    (True, True, "HEALTH_ERR", {"PG_AVAILABILITY": ERR_CHECK}, [],
     {"check_colors": {"PG_AVAILABILITY": "green"}, "err_color": RED}, GREEN,
     "PG_AVAILABILITY=green"),
    (True, True, "HEALTH_WARN", {"OSD_DOWN": WARN_CHECK}, [],
     {"check_colors": {"OTHER": "red"}}, YELLOW, "OSD_DOWN=yellow"),
    # checks given as bare severities
    (True, True, "HEALTH_ERR", {"X": "HEALTH_ERR"}, [], {"err_color": RED}, RED, "X=red"),
])
def test_color_for(reachable, quorum, status, checks, pgs, kw, color, why):
    got, reason = color_for(reachable, quorum, status, checks, pgs, **kw)
    assert got == color
    assert why in reason


def test_color_for_lists_at_most_five_pgs():
    color, why = color_for(True, True, "HEALTH_OK", {}, ["p:%d" % i for i in range(9)])
    assert color == YELLOW
    assert why.startswith("PGs not active: p:0, p:1, p:2, p:3, p:4, ... (cluster-wide")


def test_parse_check_colors():
    assert parse_check_colors("OSD_DOWN=yellow PG_AVAILABILITY=red  MON_DOWN=green") == {
        "OSD_DOWN": "yellow", "PG_AVAILABILITY": "red", "MON_DOWN": "green"}
    assert parse_check_colors("") == {}


@pytest.mark.parametrize("text", ["OSD_DOWN", "OSD_DOWN=blue", "=red", "OSD_DOWN=Red",
                                  "OSD_DOWN:red", "A=red B"])
def test_parse_check_colors_errors(text):
    with pytest.raises(ValueError, match="is not CHECK=green\\|yellow\\|red"):
        parse_check_colors(text)


# ----------------------------------------------------------------------------- the agent

class Node:
    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        self.ceph = fakes.FakeCeph(client_ip="10.252.0.1")
        fakes.install(monkeypatch, self.ceph)
        self.bin = fakes.StubBin(tmp_path / "bin", monkeypatch)
        self.attrs = fakes.stateful_attrd(self.bin, str(tmp_path / "attrd.json"))
        # what Pacemaker's execd sets for every action, and what narrows attrd_updater -A
        monkeypatch.setenv("OCF_RESKEY_CRM_meta_on_node", "node1")
        self.bin.add("crm_node", "echo node1")
        self.bin.add("crm_attribute")
        self.conf = tmp_path / "ceph.conf"
        self.conf.write_text("[global]\nmon_host = 10.252.0.1\n")
        self.params = {"ceph_conf": str(self.conf)}
        self.err = ""

    def run(self, action, params=None, interval=None):
        env = {"OCF_RESOURCE_INSTANCE": "ceph-health:0", "HA_RSCTMP": str(self.tmp / "rsc"),
               "OCF_RESKEY_CRM_meta_timeout": "30000", "OCF_RESKEY_CRM_meta_on_node": "node1"}
        env.update(("OCF_RESKEY_" + k, v) for k, v in dict(self.params, **(params or {})).items())
        if interval:
            env["OCF_RESKEY_CRM_meta_interval"] = str(interval)
        err = io.StringIO()
        rc = ocf.run(CephHealth(), ["CephHealth", action], env, io.StringIO(), err)
        self.err = err.getvalue()
        return rc

    @property
    def reason(self):
        lines = [ln for ln in self.err.splitlines() if ln.startswith("ocf-exit-reason:")]
        return lines[-1][len("ocf-exit-reason:"):] if lines else None

    def attrd(self):
        """attrd_updater's writes (queries left out)."""
        return [c[1:] for c in self.bin.calls("attrd_updater") if "-Q" not in c]

    def health_writes(self, name="#health-ceph"):
        return [c for c in self.attrd() if c[:2] == ["-n", name]]

    def peer_reaches_quorum(self, peer="node2"):
        """A peer's CephHealth monitor that reached a quorum, as quorumwitness.step has it
        write: an acknowledgement of every token it read (only node1's here)."""
        lost, seen = quorumwitness.names("#health-ceph")
        tokens = self.attrs(lost)
        if tokens:
            ack = " ".join("%s=%s" % kv for kv in sorted(tokens.items()) if kv[0] != peer)
            fakes_set(self, seen, peer, ack)

    def crm_attribute(self):
        return [c[1:] for c in self.bin.calls("crm_attribute")]

    def published(self, name="#health-ceph"):
        """The last value set for ``name`` (transient with attrd_updater, permanent with
        crm_attribute -l forever)."""
        sets = [c[3] for c in self.attrd() if c[:2] == ["-n", name] and c[2] in ("-U", "-B")]
        sets += [c[3] for c in self.crm_attribute() if c[:2] == ["-n", name] and c[2] == "-v"]
        return sets[-1] if sets else None


def fakes_set(node, name, host, value):
    import json
    path = node.tmp / "attrd.json"
    db = json.loads(path.read_text()) if path.exists() else {}
    db.setdefault(name, {})[host] = value
    path.write_text(json.dumps(db))


@pytest.fixture
def node(tmp_path, monkeypatch):
    n = Node(tmp_path, monkeypatch)
    yield n
    n.ceph.close()


def test_start_publishes_green_and_the_addresses(node):
    assert node.run("start") == 0, node.err
    assert node.attrd() == [["-n", "#health-ceph", "-B", "green", "-d", "5s"]]
    assert node.attrs("#health-ceph") == {"node1": "green"}
    # the addresses are permanent (they must outlive this node's fencing), written once
    # (compared with the CIB's value first: test_cephhealth_addresses.py, stateful stub)
    assert [c for c in node.crm_attribute() if "-v" in c] == [
        ["-n", "vmceph-ceph-addrs", "-v", "10.252.0.1", "-l", "forever"]]
    assert node.run("monitor", interval=10000) == 0
    # bounded by ceph_timeout (10 s) and the operation's own timeout
    conf = node.ceph.sessions[-1].conf
    for key in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
        assert 9 <= int(conf[key]) <= 10, key
    assert node.ceph.sessions[-1].state == "shutdown"
    assert "quorum_status" in node.ceph.mon_prefixes()


def test_probe_before_and_after_start(node):
    assert node.run("monitor") == ocf.OCF_NOT_RUNNING
    assert node.run("start") == 0
    calls, sessions = len(node.attrd()), len(node.ceph.sessions)
    assert node.run("monitor") == 0
    # a probe only says whether it runs: no Ceph, no attribute update
    assert (len(node.attrd()), len(node.ceph.sessions)) == (calls, sessions)


def test_recurring_monitor_follows_ceph(node):
    assert node.run("start") == 0
    node.ceph.health = fakes.health_warn_osd_down()
    assert node.run("monitor", interval=10000) == 0
    assert node.published() == "yellow"
    node.ceph.health = fakes.health_err_pg_availability()
    assert node.run("monitor", interval=10000, params={"err_color": "red"}) == 0
    assert node.published() == "red"
    node.ceph.health = dict(fakes.HEALTH_OK)
    assert node.run("monitor", interval=10000) == 0
    assert node.published() == "green"


def test_monitor_no_quorum_is_red_once_a_peer_reaches_one_and_the_monitor_succeeds(node):
    assert node.run("start") == 0
    node.ceph.lose_quorum()
    assert node.run("monitor", interval=10000) == 0, node.err
    # alone in its view: nobody has reached a quorum since, so it may be everybody's
    assert node.published() == "yellow"
    assert "no peer has reached a monitor quorum since" in node.err
    node.peer_reaches_quorum("node2")
    assert node.run("monitor", interval=10000) == 0, node.err
    assert node.published() == "red"
    assert "WARNING: Ceph seen from this node: red" in node.err
    assert "node2 reached a monitor quorum after this node lost it" in node.err


def test_an_acknowledgement_written_while_this_node_asks_vouches_for_nothing(node):
    """The quorum comes back while this node's ask is still timing out: a peer reaches it
    and acknowledges this node's token meanwhile. That vouches for nothing about this
    ask (seen in the 15-fault soak, seed 1204, fault 8: red for 11 s as the quorum came
    back): yellow. Written before the next ask, it does: red then."""
    assert node.run("start") == 0
    node.ceph.lose_quorum()
    assert node.run("monitor", interval=10000) == 0, node.err
    assert node.published() == "yellow"                 # the token is out
    node.ceph.on_connect = lambda: node.peer_reaches_quorum("node2")
    assert node.run("monitor", interval=10000) == 0, node.err
    assert node.published() == "yellow", node.err
    node.ceph.on_connect = None
    assert node.run("monitor", interval=10000) == 0, node.err
    assert node.published() == "red"


def test_quorum_lost_after_connect_is_red_despite_stale_health(node):
    """health says HEALTH_OK (stale) once quorum is gone; the agent asks quorum_status."""
    assert node.run("start") == 0
    original = node.ceph.mon_command

    def lose_then_answer(session, cmd):
        node.ceph.lose_quorum()
        return original(session, cmd)
    node.ceph.mon_command = lose_then_answer
    assert node.run("monitor", interval=10000) == 0
    assert node.published() == "yellow"   # no peer's word yet (quorumwitness)
    node.peer_reaches_quorum("node3")
    assert node.run("monitor", interval=10000) == 0
    assert node.published() == "red"
    assert "monitor quorum" in node.err or "timed out" in node.err


def test_inactive_pgs_of_a_watched_pool_are_yellow_not_red(node):
    # cluster-wide (every node sees the same): red would be red everywhere (issue 13)
    node.ceph.health = fakes.health_pgs_inactive([
        "pg 2.1 is stuck peering for 61s, current state peering, last acting [0,1]"])
    assert node.run("start", {"pools": "rbd"}) == 0
    assert node.published() == "yellow"
    assert "PGs not active: rbd:2.1" in node.err and "cluster-wide" in node.err


def test_pg_check_needs_no_manager(node):
    # the monitors' health detail answers: the manager is neither asked nor needed
    node.ceph.mgr_up = False
    assert node.run("start", {"pools": "rbd"}) == 0
    assert node.published() == "green"
    assert not [c for c in node.ceph.commands if c.get("_target") == "mgr"]


def test_check_colors_parameter_applies(node):
    node.ceph.health = fakes.health_warn_osd_down()
    assert node.run("start", {"check_colors": "OSD_DOWN=green OSD_HOST_DOWN=green"}) == 0
    assert node.published() == "green"


def test_custom_attribute_names_and_no_address_attribute(node):
    assert node.run("start", {"attribute": "#health-storage", "address_attribute": "",
                              "dampen": "30s"}) == 0
    assert node.attrd() == [["-n", "#health-storage", "-B", "green", "-d", "30s"]]


def test_ceph_unreachable_is_red_and_publishes_no_addresses(node):
    node.ceph.lose_quorum()
    assert node.run("start") == 0
    assert node.published() == "yellow"
    node.peer_reaches_quorum()
    assert node.run("monitor", interval=10000) == 0
    assert node.published() == "red"
    assert node.published("vmceph-ceph-addrs") is None
    assert "no Ceph monitor quorum reachable within 10 s" in node.err


def test_refused_credentials_fail_the_monitor(node):
    assert node.run("start") == 0
    node.ceph.auth_ok = False
    assert node.run("monitor", interval=10000) == ocf.OCF_ERR_GENERIC
    assert "CephHealth cannot log in to Ceph" in node.reason


def test_attrd_unreachable_fails_the_monitor(node):
    assert node.run("start") == 0
    node.bin.add("attrd_updater", "echo 'Could not connect to attrd: Connection refused' >&2; "
                                  "exit 102")
    assert node.run("monitor", interval=10000) == ocf.OCF_ERR_GENERIC
    assert "cannot publish node attribute #health-ceph" in node.reason
    assert "Connection refused" in node.reason


def test_stop_removes_the_health_attribute_and_keeps_the_addresses(node):
    assert node.run("start") == 0
    assert node.run("stop") == 0
    assert node.attrd()[-1:] == [["-n", "#health-ceph", "-D"]]
    # issue 10: the permanent address attribute stays (test_cephhealth_addresses.py)
    assert not [c for c in node.crm_attribute() if "-D" in c]
    assert node.run("monitor") == ocf.OCF_NOT_RUNNING


def test_stop_removes_custom_attributes(node):
    assert node.run("start", {"attribute": "#health-x", "address_attribute": "x-addrs"}) == 0
    assert node.run("stop", {"attribute": "#health-x", "address_attribute": "x-addrs"}) == 0
    assert node.attrd()[-1:] == [["-n", "#health-x", "-D"]]
    assert not [c for c in node.crm_attribute() if "-D" in c]


def test_stop_succeeds_even_when_attrd_fails(node):
    assert node.run("start") == 0
    node.bin.add("attrd_updater", "exit 102")
    assert node.run("stop") == 0
    assert "could not remove node attribute #health-ceph" in node.err
    assert node.run("monitor") == ocf.OCF_NOT_RUNNING


def test_stop_with_invalid_configuration_still_unpublishes(node):
    assert node.run("start") == 0
    node.conf.unlink()
    assert node.run("stop", {"warn_color": "purple"}) == 0
    assert ["-n", "#health-ceph", "-D"] in node.attrd()


def test_stop_touches_no_ceph(node):
    assert node.run("start") == 0
    sessions = len(node.ceph.sessions)
    node.ceph.lose_quorum()
    assert node.run("stop") == 0
    assert len(node.ceph.sessions) == sessions


@pytest.mark.parametrize("params,code,fragment", [
    ({"check_colors": "OSD_DOWN=blue"}, 6, "check_colors"),
    ({"warn_color": "purple"}, 6, "warn_color"),
    ({"err_color": "orange"}, 6, "err_color"),
    ({"dampen": "soon"}, 6, "dampen"),
    ({"ceph_timeout": "0"}, 6, "ceph_timeout"),
    ({"attribute": ""}, 6, "attribute='': must start with #health-"),
    ({"ceph_conf": "/nonexistent/ceph.conf"}, 5, "/nonexistent/ceph.conf"),
    ({"ceph_keyring": "/nonexistent/keyring"}, 5, "/nonexistent/keyring"),
])
def test_validate_all(node, params, code, fragment):
    assert node.run("validate-all", params) == code
    assert fragment in node.reason


def test_validate_all_ok(node):
    assert node.run("validate-all") == 0
    assert node.attrd() == [] and node.ceph.sessions == []


def test_invalid_configuration_probe_and_recurring_monitor(node):
    """ocf-rarun's rules: a probe answers from what it can see, a recurring monitor fails."""
    assert node.run("start") == 0
    bad = {"warn_color": "purple"}
    assert node.run("monitor", bad) == 0                          # still marked as started
    assert node.run("monitor", bad, interval=10000) == ocf.OCF_ERR_CONFIGURED


def test_health_without_a_known_status_is_not_green():
    color, why = color_for(True, True, "HEALTH_UNKNOWN", {}, [])
    assert color == YELLOW and "HEALTH_UNKNOWN" in why


def test_a_quorum_lost_for_everybody_stays_yellow_and_green_comes_back(node):
    """Nobody reaches a quorum (no acknowledgement in attrd): yellow at every monitor, not
    red, so migrate-on-red leaves the VMs running (quorumwitness). Back: green, and this
    node's outage token is gone."""
    lost, seen = quorumwitness.names("#health-ceph")
    assert node.run("start") == 0
    node.ceph.lose_quorum()
    for _ in range(3):
        assert node.run("monitor", interval=10000) == 0, node.err
        assert node.published() == "yellow"
    token = node.attrs(lost)["node1"]
    assert [c for c in node.attrd() if c[:2] == ["-n", lost]] == [["-n", lost, "-U", token]]
    # an acknowledgement of an earlier outage of node1 vouches for nothing
    fakes_set(node, seen, "node2", "node1=some-earlier-token")
    assert node.run("monitor", interval=10000) == 0
    assert node.published() == "yellow"
    node.ceph.restore_quorum()
    assert node.run("monitor", interval=10000) == 0, node.err
    assert node.published() == "green"
    assert node.attrs(lost) == {}


def test_a_node_that_reaches_a_quorum_acknowledges_its_peers_outages(node):
    lost, seen = quorumwitness.names("#health-ceph")
    fakes_set(node, lost, "node2", "tok2")
    fakes_set(node, lost, "node3", "tok3")
    assert node.run("start") == 0, node.err
    assert node.published() == "green"
    assert node.attrs(seen) == {"node1": "node2=tok2 node3=tok3"}
    # not written again while nothing changes
    writes = len(node.attrd())
    assert node.run("monitor", interval=10000) == 0
    assert len(node.attrd()) == writes + 1   # the health attribute alone
    assert node.run("stop") == 0
    assert node.attrs(seen) == {} and node.attrs("#health-ceph") == {}
