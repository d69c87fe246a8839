"""CephHealth's PG check (``pools=``) from the monitors' PG_AVAILABILITY health check
(issue 13): no manager caps, and a cluster-wide PG problem never turns every node red.

Oracle (issue 13, README): red means "this node cannot do I/O"; inactive PGs are a
cluster-wide condition (every node sees the same), so they are reported (yellow, the pools
and PGs in the reason, logged as a warning) without turning every node red at once.
"""

import pytest

import fakes
from test_cephhealth import Node
from vmceph.cephhealth import GREEN, RED, YELLOW, color_for, inactive_pgs_of

STUCK = "pg %s is stuck inactive for 62s, current state unknown, last acting []"
PEERING = "pg %s is stuck peering for 61s, current state peering, last acting [0,1]"
IDS = {".mgr": 1, "rbd": 2, "other": 3}


def checks(lines, count=None):
    h = fakes.health_pgs_inactive(lines, count)
    c = h["checks"]["PG_AVAILABILITY"]
    return {"PG_AVAILABILITY": {"severity": c["severity"], "count": c["summary"]["count"],
                                "summary": c["summary"]["message"],
                                "detail": [d["message"] for d in c["detail"]]}}


# ----------------------------------------------------------------------------- pure parts

def test_inactive_pgs_of_picks_the_watched_pools_pgs():
    c = checks([STUCK % "3.0", PEERING % "2.1f", STUCK % "2.a", STUCK % "12.1"])
    assert inactive_pgs_of(c, IDS, ["rbd"]) == (["rbd:2.1f", "rbd:2.a"], None)
    assert inactive_pgs_of(c, IDS, ["other", "rbd"]) == (
        ["other:3.0", "rbd:2.1f", "rbd:2.a"], None)
    assert inactive_pgs_of(c, IDS, [".mgr"]) == ([], None)


def test_inactive_pgs_of_without_the_check_is_nothing():
    assert inactive_pgs_of({}, IDS, ["rbd"]) == ([], None)
    assert inactive_pgs_of({"OSD_DOWN": {"detail": [STUCK % "2.1"]}}, IDS, ["rbd"]) == (
        [], None)


def test_a_pool_that_does_not_exist_is_unknown():
    found, unknown = inactive_pgs_of({}, IDS, ["rbd", "nosuch"])
    assert found == [] and unknown == "pool nosuch does not exist"


def test_a_truncated_detail_without_our_pool_is_unknown():
    # the monitors list at most mon_health_max_detail PGs; the count says how many there are
    c = checks([STUCK % "3.%x" % k for k in range(50)], count=80)
    found, unknown = inactive_pgs_of(c, IDS, ["rbd"])
    assert found == [] and "80 PGs are not active and the monitors list 50" in unknown
    # complete, or with one of ours listed: known
    assert inactive_pgs_of(checks([STUCK % "3.0"]), IDS, ["rbd"]) == ([], None)
    c = checks([STUCK % "2.0"], count=80)
    assert inactive_pgs_of(c, IDS, ["rbd"]) == (["rbd:2.0"], None)


def test_inactive_pgs_alone_never_make_a_node_red():
    for kw in ({}, {"warn_color": GREEN}, {"check_colors": {"PG_AVAILABILITY": "green"}}):
        color, why = color_for(True, True, "HEALTH_WARN", checks([STUCK % "2.1"]),
                               ["rbd:2.1"], **kw)
        assert color == YELLOW, kw
        assert "PGs not active: rbd:2.1" in why
    # an administrator who asks for red gets it (check_colors is explicit)
    color, _ = color_for(True, True, "HEALTH_WARN", checks([STUCK % "2.1"]), ["rbd:2.1"],
                         check_colors={"PG_AVAILABILITY": "red"})
    assert color == RED


# ----------------------------------------------------------------------------- the agent

@pytest.fixture
def node(tmp_path, monkeypatch):
    n = Node(tmp_path, monkeypatch)
    yield n
    n.ceph.close()


def test_every_node_sees_the_same_inactive_pgs_and_none_turns_red(tmp_path, monkeypatch):
    """Three nodes, one cluster with inactive PGs in the watched pool: every node yellow,
    the reason (a warning in the log) names the pool and PGs."""
    colors = []
    for k in range(3):
        n = Node(tmp_path / str(k), monkeypatch)
        (tmp_path / str(k)).mkdir(exist_ok=True)
        n.conf = tmp_path / str(k) / "ceph.conf"
        n.conf.write_text("[global]\nmon_host = 10.252.0.1\n")
        n.params = {"ceph_conf": str(n.conf)}
        n.ceph.health = fakes.health_pgs_inactive([PEERING % "2.1", STUCK % "2.3"])
        assert n.run("start", {"pools": "rbd"}) == 0, n.err
        colors.append(n.published())
        assert "WARNING: Ceph seen from this node: yellow (PGs not active: rbd:2.1, rbd:2.3" \
            in n.err
        n.ceph.close()
    assert colors == [YELLOW] * 3


def test_inactive_pgs_of_another_pool_count_as_the_health_check(node):
    node.ceph.add_image("other/x")
    node.ceph.health = fakes.health_pgs_inactive([STUCK % "3.0"])
    assert node.run("start", {"pools": "rbd", "warn_color": "green"}) == 0
    assert node.published() == "green"


def test_the_pg_check_asks_the_monitors_only(node):
    node.ceph.health = fakes.health_pgs_inactive([STUCK % "2.1"])
    assert node.run("start", {"pools": "rbd"}) == 0
    asked = [c.get("prefix") for c in node.ceph.commands]
    assert "osd lspools" in asked and "health" in asked
    assert not [c for c in node.ceph.commands if c.get("_target") == "mgr"]


def test_a_missing_pool_is_yellow_with_the_reason(node):
    assert node.run("start", {"pools": "rbd nosuch"}) == 0
    assert node.published() == "yellow"
    assert "pool nosuch does not exist" in node.err
