"""vmlab's pacemaker_remote nodes (`vmlab up --remotes N`), as pure layout: names,
addresses, what teardown and fence_vmlab read (lab.json), what Ceph and corosync see."""

import pytest

from vmlab.layout import Layout
from vmlab.util import LabError


def test_remote_nodes_follow_the_full_nodes():
    lab = Layout(name="t-remote", nodes=3, pacemaker=True, remotes=2, node_prefix="node",
                 subnet=200)
    assert list(lab.indexes) == [1, 2, 3]
    assert list(lab.remote_indexes) == [4, 5]
    assert [lab.node_name(i) for i in lab.all_indexes] == [
        "node1", "node2", "node3", "remote1", "remote2"]
    assert lab.node_ip(4) == "10.200.0.4"
    # Ceph mons and corosync members: the full nodes only
    assert [n for n, _ in lab.node_list()] == ["node1", "node2", "node3"]
    assert lab.mon_hosts == ["10.200.0.%d:6789" % i for i in (1, 2, 3)]
    # lab.json lists every node: teardown kills them, fence_vmlab finds them by name
    doc = lab.lab_json()
    assert [(n["name"], n["remote"]) for n in doc["nodes"]] == [
        ("node1", False), ("node2", False), ("node3", False), ("remote1", True),
        ("remote2", True)]
    assert doc["params"]["remotes"] == 2


def test_remote_nodes_need_pacemaker():
    with pytest.raises(LabError):
        Layout(name="t-remote", nodes=3, pacemaker=False, remotes=1)
    with pytest.raises(LabError):
        Layout(name="t-remote", nodes=3, pacemaker=True, remotes=5)
    assert list(Layout(name="t-remote", nodes=3).remote_indexes) == []
