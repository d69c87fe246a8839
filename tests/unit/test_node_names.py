"""node_addresses names the cluster does not know (issue 10): UNKNOWN, and validate-all
warns about them."""

from pathlib import Path

import pytest

from test_agent_flows import World
from vmceph import cluster
from vmceph.cluster import NodeInfo
from vmceph.safety import MEMBER

DATA = Path(__file__).parent / "data" / "pacemaker"


def test_unknown_node_names():
    nodes = {"node1": NodeInfo("node1", MEMBER), "node2": NodeInfo("node2", MEMBER)}
    out = cluster.unknown_node_names({"node1": ["10.0.0.1"],
                                      "node2.example.com": ["10.0.0.2"]}, nodes)
    assert len(out) == 1 and "node2.example.com" in out[0] and "node1, node2" in out[0]
    assert cluster.unknown_node_names({"x": ["10.0.0.9"]}, {}) == []   # membership unknown


@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def test_validate_all_warns_about_a_name_the_cluster_does_not_know(w):
    w.bin.add("crm_mon", "cat '%s'" % (DATA / "all-online.crm_mon.xml"))
    w.bin.add("cibadmin", "cat '%s'" % (DATA / "all-online.cib_nodes.xml"))
    w.params["membership"] = ""
    w.params["node_addresses"] = "node1=10.252.0.1 node2.example.com=10.252.0.2"
    assert w.run("validate-all") == 0, w.err
    log = w.logfile.read_text()
    assert "node_addresses names node2.example.com, which is not a node of this cluster" in log
    w.params["node_addresses"] = "node1=10.252.0.1 node2=10.252.0.2"
    assert w.run("validate-all") == 0, w.err
    assert w.logfile.read_text().count("which is not a node of this cluster") == 1
