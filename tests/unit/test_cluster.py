"""The Pacemaker adapter (lib/vmceph/cluster.py): crm_mon's XML, the static parameters,
and who owns a Ceph client address.

The crm_mon sample below is real output of Pacemaker 2.1.5's ``crm_mon -1 -A
--output-as=xml``, produced offline from the CIB beside it (``CIB_file=cib.xml``); the
tests check it against the installed schema and, when crm_mon is installed, produce it again.
It shows two things the code must live with: node attributes whose name starts with '#'
(``#health-ceph``) are never listed (crm_mon filters them), and offline nodes get no
``node_attributes`` entry at all.
"""

import shutil
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest

from vmceph import bounded, cluster
from vmceph.cluster import (Cluster, ClusterError, NodeInfo, owners_map, parse_crm_mon,
                            parse_membership, parse_node_addresses)
from vmceph.ocf import Deadline
from vmceph.safety import (CONFLICT, DNS_SOURCE, GONE, LEFT, LOCAL, MAINTENANCE, MEMBER,
                           UNCLEAN, UNKNOWN, Owner)

API_RNG = Path("/usr/share/pacemaker/api/api-result-2.25.rng")

# node1: online (DC); node2: online, standby, #health-ceph=red; node3: fenced (offline,
# clean); node4: lost, not yet fenced (unclean); rnode5: a pacemaker_remote node.
CIB = """<cib crm_feature_set="3.16.2" validate-with="pacemaker-3.9" epoch="12" num_updates="4"
     admin_epoch="0" have-quorum="1" dc-uuid="1">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="o1" name="stonith-enabled" value="true"/>
        <nvpair id="o2" name="cluster-infrastructure" value="corosync"/>
        <nvpair id="o4" name="node-health-strategy" value="migrate-on-red"/>
        <nvpair id="o3" name="dc-version" value="2.1.5-a3f44794f94"/>
      </cluster_property_set>
    </crm_config>
    <nodes>
      <node id="1" uname="node1"/>
      <node id="2" uname="node2"/>
      <node id="3" uname="node3"/>
      <node id="4" uname="node4"/>
    </nodes>
    <resources>
      <primitive id="rnode5" class="ocf" provider="pacemaker" type="remote">
        <instance_attributes id="rnode5-ia">
          <nvpair id="rnode5-server" name="server" value="10.252.0.5"/>
        </instance_attributes>
      </primitive>
    </resources>
    <constraints/>
  </configuration>
  <status>
    <node_state id="1" uname="node1" in_ccm="true" crmd="online" crm-debug-origin="do_update_resource" join="member" expected="member">
      <transient_attributes id="1">
        <instance_attributes id="status-1">
          <nvpair id="status-1-.health-ceph" name="#health-ceph" value="green"/>
          <nvpair id="status-1-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.252.0.1 fd00:252::1"/>
        </instance_attributes>
      </transient_attributes>
    </node_state>
    <node_state id="2" uname="node2" in_ccm="true" crmd="online" crm-debug-origin="do_update_resource" join="member" expected="member">
      <transient_attributes id="2">
        <instance_attributes id="status-2">
          <nvpair id="status-2-.health-ceph" name="#health-ceph" value="red"/>
          <nvpair id="status-2-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.252.0.2"/>
          <nvpair id="status-2-standby" name="standby" value="on"/>
        </instance_attributes>
      </transient_attributes>
    </node_state>
    <node_state id="3" uname="node3" in_ccm="false" crmd="offline" crm-debug-origin="send_stonith_update" join="down" expected="down">
      <transient_attributes id="3">
        <instance_attributes id="status-3">
          <nvpair id="status-3-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.252.0.3"/>
        </instance_attributes>
      </transient_attributes>
    </node_state>
    <node_state id="4" uname="node4" in_ccm="false" crmd="offline" crm-debug-origin="peer_update_callback" join="member" expected="member">
      <transient_attributes id="4">
        <instance_attributes id="status-4">
          <nvpair id="status-4-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.252.0.4"/>
        </instance_attributes>
      </transient_attributes>
    </node_state>
    <node_state id="rnode5" uname="rnode5" remote_node="true" in_ccm="true" crm-debug-origin="do_update_resource">
      <transient_attributes id="rnode5">
        <instance_attributes id="status-rnode5">
          <nvpair id="status-rnode5-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.252.0.5"/>
        </instance_attributes>
      </transient_attributes>
    </node_state>
  </status>
</cib>
"""

CRM_MON = """<pacemaker-result api-version="2.25" request="crm_mon -1 -A --output-as=xml">
  <summary>
    <stack type="corosync"/>
    <current_dc present="true" version="2.1.5-a3f44794f94" name="node1" id="1" with_quorum="true" mixed_version="false"/>
    <last_update time="Thu Nov 26 01:06:09 2026"/>
    <last_change time="" user="" client="" origin=""/>
    <nodes_configured number="5"/>
    <resources_configured number="1" disabled="0" blocked="0"/>
    <cluster_options stonith-enabled="true" symmetric-cluster="true" no-quorum-policy="stop" maintenance-mode="false" stop-all-resources="false" stonith-timeout-ms="60000" priority-fencing-delay-ms="0"/>
  </summary>
  <nodes>
    <node name="node1" id="1" online="true" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="true" resources_running="0" type="member"/>
    <node name="node2" id="2" online="true" standby="true" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="red" feature_set="&lt;3.15.1" shutdown="false" expected_up="true" is_dc="false" resources_running="0" type="member"/>
    <node name="node3" id="3" online="false" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" shutdown="false" expected_up="false" is_dc="false" resources_running="0" type="member"/>
    <node name="node4" id="4" online="false" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="true" health="green" shutdown="false" expected_up="true" is_dc="false" resources_running="0" type="member"/>
    <node name="rnode5" id="rnode5" online="false" standby="false" standby_onfail="false" maintenance="false" pending="false" unclean="false" health="green" shutdown="false" expected_up="false" is_dc="false" resources_running="0" type="remote"/>
  </nodes>
  <resources>
    <resource id="rnode5" resource_agent="ocf:pacemaker:remote" role="Stopped" active="false" orphaned="false" blocked="false" managed="true" failed="false" failure_ignored="false" nodes_running_on="0"/>
  </resources>
  <node_attributes>
    <node name="node1">
      <attribute name="vmceph-ceph-addrs" value="10.252.0.1 fd00:252::1"/>
    </node>
    <node name="node2">
      <attribute name="vmceph-ceph-addrs" value="10.252.0.2"/>
    </node>
  </node_attributes>
  <node_history/>
  <status code="0" message="OK"/>
</pacemaker-result>
"""


def _summary(nodes):
    return {n: (i.state, i.attributes) for n, i in nodes.items()}


EXPECTED = {
    "node1": (MEMBER, {"vmceph-ceph-addrs": "10.252.0.1 fd00:252::1"}),
    "node2": (MEMBER, {"vmceph-ceph-addrs": "10.252.0.2"}),     # standby is still a member
    "node3": (LEFT, {}),      # offline and clean: GONE only with proof of fencing
    "node4": (UNCLEAN, {}),
    "rnode5": (LEFT, {}),     # a remote node keeps its state: it runs clients too
}


def test_parse_crm_mon_states_and_attributes():
    assert _summary(parse_crm_mon(CRM_MON)) == EXPECTED


def test_crm_mon_hides_hash_attributes_and_offline_nodes_attributes():
    """What the sample shows about crm_mon (so no code may rely on the contrary): the
    '#health-ceph' attribute of the CIB is not listed, nor are offline nodes' attributes."""
    nodes = parse_crm_mon(CRM_MON)
    assert "#health-ceph" not in nodes["node2"].attributes
    assert nodes["node3"].attributes == {} and nodes["node4"].attributes == {}


def test_remote_nodes_are_kept_with_their_state():
    """Dropping a remote node made its live QEMU's address look like no node's (issue 10)."""
    nodes = parse_crm_mon(CRM_MON)
    assert nodes["rnode5"].state == LEFT
    online = parse_crm_mon(_mon(_node("r", "true", "false", "remote") +
                                _node("g", "true", "true", "guest")))
    assert online["r"].state == MEMBER and online["g"].state == UNCLEAN


def test_sample_follows_the_installed_crm_mon_schema():
    from lxml import etree
    if not API_RNG.exists():
        pytest.skip("Pacemaker's API schema %s is not installed (pacemaker-cli-utils)" % API_RNG)
    rng = etree.RelaxNG(etree.parse(str(API_RNG)))
    assert rng.validate(etree.fromstring(CRM_MON.encode())), rng.error_log


def test_installed_crm_mon_gives_the_same_view(tmp_path):
    """Run the real crm_mon on the CIB offline: the parser sees what the sample says."""
    crm_mon = shutil.which("crm_mon", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if crm_mon is None:
        pytest.skip("crm_mon is not installed (apt-get install pacemaker-cli-utils)")
    cib = tmp_path / "cib.xml"
    cib.write_text(CIB)
    r = subprocess.run([crm_mon, "-1", "-A", "--output-as=xml"], capture_output=True,
                       text=True, timeout=30, env={"CIB_file": str(cib), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert _summary(parse_crm_mon(r.stdout)) == EXPECTED


def _mon(nodes_xml, attrs_xml=""):
    return ("<pacemaker-result api-version='2.25' request='crm_mon'><nodes>%s</nodes>"
            "<node_attributes>%s</node_attributes><status code='0' message='OK'/>"
            "</pacemaker-result>" % (nodes_xml, attrs_xml))


def _node(name, online, unclean, type_="member"):
    return ("<node name='%s' id='%s' online='%s' standby='false' standby_onfail='false' "
            "maintenance='false' pending='false' unclean='%s' shutdown='false' "
            "expected_up='true' is_dc='false' resources_running='0' type='%s'/>"
            % (name, name, online, unclean, type_))


@pytest.mark.parametrize("online,unclean,state", [
    ("true", "false", MEMBER), ("true", "true", UNCLEAN), ("false", "true", UNCLEAN),
    ("false", "false", LEFT)])
def test_node_state_table(online, unclean, state):
    assert parse_crm_mon(_mon(_node("n", online, unclean)))["n"].state == state


def test_attributes_of_unknown_nodes_ignored():
    nodes = parse_crm_mon(_mon(_node("a", "true", "false"),
                               "<node name='ghost'><attribute name='x' value='1'/></node>"
                               "<node name='a'><attribute name='x' value='1'/>"
                               "<attribute name='y' value='2'/></node>"))
    assert list(nodes) == ["a"] and nodes["a"].attributes == {"x": "1", "y": "2"}


def test_offline_node_in_maintenance_is_not_gone():
    xml = _mon(_node("a", "false", "false")).replace("maintenance='false'",
                                                     "maintenance='true'")
    assert parse_crm_mon(xml)["a"].state == MAINTENANCE
    cluster_wide = _mon(_node("a", "false", "false")).replace(
        "<nodes>", "<summary><cluster_options maintenance-mode='true'/></summary><nodes>")
    assert parse_crm_mon(cluster_wide)["a"].state == MAINTENANCE


# ----------------------------------------------------------------------------- parameters

def test_parse_membership():
    nodes = parse_membership("node1=member node2=fenced node3=unclean node4=offline "
                             "node5=ONLINE node6=Gone")
    assert {n: i.state for n, i in nodes.items()} == {
        "node1": MEMBER, "node2": GONE, "node3": UNCLEAN, "node4": LEFT, "node5": MEMBER,
        "node6": GONE}
    assert parse_membership("n=left n2=maintenance")["n2"].state == MAINTENANCE
    assert parse_membership("") == {} and parse_membership("  ") == {}


@pytest.mark.parametrize("text", ["node1", "=member", "node1=dead", "node1=", "node1:member"])
def test_parse_membership_errors(text):
    with pytest.raises(ValueError) as e:
        parse_membership(text)
    assert repr(text.split()[0]) in str(e.value) and "NODE=member|fenced|unclean" in str(e.value)


def test_parse_node_addresses():
    assert parse_node_addresses("node1=10.0.0.1,10.0.1.1 node2=10.0.0.2  node3=fd00::3,") == {
        "node1": ["10.0.0.1", "10.0.1.1"], "node2": ["10.0.0.2"], "node3": ["fd00::3"]}
    assert parse_node_addresses("") == {}


@pytest.mark.parametrize("text", ["node1", "node1=", "=10.0.0.1", "node1=,"])
def test_parse_node_addresses_errors(text):
    with pytest.raises(ValueError, match="is not NODE=IP"):
        parse_node_addresses(text)


# ----------------------------------------------------------------------------- owners

def _nodes(**states):
    return {n: NodeInfo(n, s) for n, s in states.items()}


def test_owners_map_states():
    nodes = _nodes(node1=MEMBER, node2=MEMBER, node3=GONE, node4=UNCLEAN)
    static = {"node2": ["10.0.0.2"], "node3": ["10.0.0.3"], "node4": ["10.0.0.4"],
              "node9": ["10.0.0.9"]}
    owners = owners_map("node1", ["10.0.0.1"], nodes, static)
    assert owners["10.0.0.1"] == Owner("node1", LOCAL, "own session")
    assert owners["10.0.0.2"] == Owner("node2", MEMBER, "node_addresses")
    assert owners["10.0.0.3"].state == GONE
    assert owners["10.0.0.4"].state == UNCLEAN
    # a name the cluster does not know is UNKNOWN, never "gone" (issue 10: an FQDN in
    # node_addresses made a live node's QEMU a GONE client)
    assert owners["10.0.0.9"].state == UNKNOWN and owners["10.0.0.9"].node == "node9"
    assert "no node node9" in owners["10.0.0.9"].note


def test_owners_map_membership_unknown_counts_others_as_members():
    owners = owners_map("node1", ["10.0.0.1"], {}, {"node2": ["10.0.0.2"], "node1": ["10.0.0.11"]},
                        resolver=lambda n: {"node3": ["10.0.0.3"]}.get(n, []))
    assert owners["10.0.0.2"].state == MEMBER
    assert owners["10.0.0.11"].state == LOCAL
    # the resolver only knows the names it is given: node3 is in no list
    assert "10.0.0.3" not in owners


def test_owners_map_sources_and_conflicts():
    """own session, node_addresses, published attribute, name resolution; an address two
    sources give to different nodes is CONFLICT (refused), whatever the sources."""
    nodes = _nodes(node1=MEMBER, node2=MEMBER, node3=GONE)
    nodes["node2"].attributes = {"vmceph-ceph-addrs": "10.0.0.1 10.0.0.22 10.0.0.3 10.0.0.2"}
    static = {"node3": ["10.0.0.3", "10.0.0.33"]}
    dns = {"node1": ["10.0.0.100", "127.0.1.1"], "node2": ["10.0.0.200", "10.0.0.2"],
           "node3": ["10.0.0.33"]}
    owners = owners_map("node1", ["10.0.0.1"], nodes, static, dns=dns)
    assert owners["10.0.0.1"].state == CONFLICT and "node2" in owners["10.0.0.1"].note
    assert owners["10.0.0.3"].state == CONFLICT
    assert owners["10.0.0.33"] == Owner("node3", GONE, "node_addresses")   # DNS agrees
    assert owners["10.0.0.2"] == Owner("node2", MEMBER, "attribute vmceph-ceph-addrs")
    assert owners["10.0.0.22"] == Owner("node2", MEMBER, "attribute vmceph-ceph-addrs")
    assert owners["10.0.0.100"] == Owner("node1", LOCAL, DNS_SOURCE)
    assert owners["10.0.0.200"] == Owner("node2", MEMBER, DNS_SOURCE)
    assert "127.0.1.1" not in owners


def test_resolve_all_is_parallel_under_one_cap():
    import threading
    release = threading.Event()

    def slow(name, timeout):
        if name == "hang":
            release.wait(5)
        time.sleep(0.3)
        return ["10.0.0.%d" % len(name)]
    t0 = time.monotonic()
    out = cluster.resolve_all(["a", "bb", "ccc", "dddd", "hang"], 1.0, slow)
    elapsed = time.monotonic() - t0
    release.set()
    assert out == {"a": ["10.0.0.1"], "bb": ["10.0.0.2"], "ccc": ["10.0.0.3"],
                   "dddd": ["10.0.0.4"], "hang": []}
    assert elapsed < 1.5   # one cap for all, not 5 x 0.3 s + the hang


def test_owners_map_attribute_source_and_custom_name():
    nodes = _nodes(node1=MEMBER, node2=MEMBER)
    nodes["node2"].attributes = {"vmceph-ceph-addrs": "10.0.0.2 fd00::2", "my-addrs": "10.9.9.9"}
    owners = owners_map("node1", [], nodes, {})
    assert owners["10.0.0.2"] == Owner("node2", MEMBER, "attribute vmceph-ceph-addrs")
    assert owners["fd00::2"].node == "node2"
    assert "10.9.9.9" not in owners
    assert owners_map("node1", [], nodes, {}, attr_name="my-addrs")["10.9.9.9"].node == "node2"


def test_owners_map_normalises_entity_addresses():
    owners = owners_map("node1", ["10.0.0.1:0/3154213287"], {}, {"node2": ["10.0.0.2:6800/77"]})
    assert set(owners) == {"10.0.0.1", "10.0.0.2"}


def test_owners_map_from_real_crm_mon_output():
    nodes = parse_crm_mon(CRM_MON)
    owners = owners_map("node1", ["10.252.0.1"], nodes, {"node3": ["10.252.0.3"]},
                        resolver=lambda n: [])
    assert owners["10.252.0.1"].state == LOCAL
    assert owners["fd00:252::1"] == Owner("node1", LOCAL, "attribute vmceph-ceph-addrs")
    assert owners["10.252.0.2"] == Owner("node2", MEMBER, "attribute vmceph-ceph-addrs")
    assert owners["10.252.0.3"] == Owner("node3", LEFT, "node_addresses")
    # node4 is unclean and publishes nothing crm_mon shows: its address stays unknown
    assert "10.252.0.4" not in owners


# ----------------------------------------------------------------------------- the tools

def _result(argv, rc=0, out="", err=""):
    return bounded.CommandResult(argv, rc, out, err)


def _cluster(answer):
    """A Cluster whose runner has bounded.command's exact signature (autospec: a call
    with a wrong argument fails) and answers with ``answer(argv)``."""
    runner = mock.create_autospec(bounded.command,
                                  side_effect=lambda argv, timeout, **kw: answer(argv))
    return Cluster(Deadline(20), runner=runner), runner


CIB_NODES = """<nodes>
  <node id="1" uname="node1"/>
  <node id="2" uname="node2"/>
  <node id="3" uname="node3">
    <instance_attributes id="nodes-3">
      <nvpair id="nodes-3-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.252.0.3"/>
    </instance_attributes>
  </node>
</nodes>
"""


NO_FENCING = ("<pacemaker-result api-version='2.25'><list name='fencing history' count='0'/>"
              "<status code='0' message='OK'/></pacemaker-result>")


def _crm_mon_and_cib(argv):
    if argv[0] == "crm_mon":
        return _result(argv, out=CRM_MON)
    if argv[0] == "stonith_admin":
        return _result(argv, out=NO_FENCING)
    if argv[:4] == ["cibadmin", "-Q", "-o", "status"]:
        return _result(argv, out="<status/>")
    return _result(argv, out=CIB_NODES)


def test_nodes_runs_crm_mon_with_xml_output():
    cl, runner = _cluster(_crm_mon_and_cib)
    expected = dict(EXPECTED, node3=(LEFT, {"vmceph-ceph-addrs": "10.252.0.3"}))
    assert _summary(cl.nodes()) == expected
    calls = [c.args[0] for c in runner.call_args_list]
    # offline clean nodes: the fencing history and the CIB status decide whether they
    # were fenced (not here: no fencing recorded, so node3 stays LEFT)
    assert calls == [["crm_mon", "-1", "-A", "--output-as=xml"], ["cibadmin", "-Q", "-o", "nodes"],
                     ["stonith_admin", "--history", "*", "--verbose", "--output-as=xml"],
                     ["cibadmin", "-Q", "-o", "status"]]
    assert all(0 < c.kwargs["timeout"] <= 10.0 for c in runner.call_args_list)


def test_nodes_include_permanent_attributes_of_offline_nodes():
    """crm_mon shows no attributes of an offline (fenced) node; the addresses CephHealth
    published permanently are read from the CIB's <nodes> section."""
    cl, _ = _cluster(_crm_mon_and_cib)
    nodes = cl.nodes()
    assert nodes["node3"].state == LEFT
    assert nodes["node3"].attributes.get("vmceph-ceph-addrs") == "10.252.0.3"


def test_nodes_without_readable_cib_nodes_still_answer():
    cl, _ = _cluster(lambda argv: _result(argv, out=CRM_MON) if argv[0] == "crm_mon"
                     else _result(argv, rc=1, err="cibadmin: Connection refused"))
    assert _summary(cl.nodes()) == EXPECTED   # and nothing counts as fenced


@pytest.mark.parametrize("answer,message", [
    (lambda argv: _result(argv, rc=102, err="crm_mon: Error: cluster is not available on "
                          "this node\n"), "cluster is not available"),
    (lambda argv: _result(argv, out="Cluster Summary:\n  * Stack: corosync"), "no XML"),
])
def test_nodes_failures_are_cluster_errors(answer, message):
    cl, _ = _cluster(answer)
    with pytest.raises(ClusterError, match=message):
        cl.nodes()


@pytest.mark.parametrize("exc,message", [(FileNotFoundError(2, "crm_mon"), "not installed"),
                                         (bounded.Timeout("crm_mon -1 -A", 10.0),
                                          "did not answer")])
def test_nodes_missing_or_hanging_crm_mon(exc, message):
    def boom(argv):
        raise exc
    cl, _ = _cluster(boom)
    with pytest.raises(ClusterError, match=message):
        cl.nodes()


def test_local_name_from_crm_node_else_hostname(monkeypatch):
    cl, _ = _cluster(lambda argv: _result(argv, out="node7\n"))
    assert cl.local_name() == "node7"
    monkeypatch.setattr(cluster.socket, "gethostname", lambda: "hv3.example.com")
    cl, _ = _cluster(lambda argv: _result(argv, rc=1))
    assert cl.local_name() == "hv3"


def test_attribute_commands():
    cl, runner = _cluster(lambda argv: _result(argv))
    cl.set_attribute("#health-ceph", "green", "5s")
    cl.set_attribute("vmceph-ceph-addrs", "10.0.0.1 10.0.1.1")
    cl.delete_attribute("#health-ceph")
    assert [c.args[0] for c in runner.call_args_list] == [
        ["attrd_updater", "-n", "#health-ceph", "-B", "green", "-d", "5s"],
        ["attrd_updater", "-n", "vmceph-ceph-addrs", "-U", "10.0.0.1 10.0.1.1"],
        ["attrd_updater", "-n", "#health-ceph", "-D"]]


def test_attribute_command_failure():
    cl, _ = _cluster(lambda argv: _result(
        argv, rc=102, err="Could not connect to attrd: Connection refused"))
    with pytest.raises(ClusterError, match="cannot set node attribute #health-ceph: Could not"):
        cl.set_attribute("#health-ceph", "red")


_ATTRD_XML = ('<pacemaker-result api-version="2.25" request="attrd_updater">\n'
              '  <attribute name="#health-ceph" value="%s" host="node2"/>\n'
              '  <status code="0" message="OK"/>\n</pacemaker-result>\n')


@pytest.mark.parametrize("out,value", [
    (_ATTRD_XML % "red", "red"),
    (_ATTRD_XML % "", None),
    ("", None)])
def test_query_attribute(out, value):
    cl, runner = _cluster(lambda argv: _result(argv, out=out))
    assert cl.query_attribute("#health-ceph", "node2") == value
    assert runner.call_args.args[0] == ["attrd_updater", "-n", "#health-ceph", "-Q",
                                        "--output-as=xml", "-N", "node2"]


def test_query_attribute_failure_is_none():
    cl, _ = _cluster(lambda argv: _result(argv, rc=105, err="Could not query value"))
    assert cl.query_attribute("#health-ceph", "node9") is None


def test_utilization_commands():
    cl, runner = _cluster(lambda argv: _result(argv, rc=105 if "-d" in argv else 0))
    cl.set_utilization("vm1", "cpu", 2)
    cl.delete_utilization("vm1", "hv_memory")        # 105: nothing to remove, fine
    assert [c.args[0] for c in runner.call_args_list] == [
        ["crm_resource", "-r", "vm1", "-z", "-p", "cpu", "-v", "2"],
        ["crm_resource", "-r", "vm1", "-z", "-d", "hv_memory"]]
    cl, _ = _cluster(lambda argv: _result(argv, rc=1, err="error: not found"))
    with pytest.raises(ClusterError, match="remove utilization"):
        cl.delete_utilization("vm1", "cpu")


def test_resolve_is_bounded(monkeypatch):
    release = __import__("threading").Event()

    def slow(*a, **k):
        release.wait(5)
        return []
    monkeypatch.setattr(cluster.socket, "getaddrinfo", slow)
    t0 = time.monotonic()
    assert cluster.resolve("node2", 0.2) == []
    assert time.monotonic() - t0 < 2.0
    release.set()


def test_resolve_addresses_and_failure(monkeypatch):
    infos = [(2, 1, 6, "", ("10.0.0.2", 0)), (10, 1, 6, "", ("fd00::2", 0, 0, 0)),
             (2, 1, 6, "", ("10.0.0.2", 0))]
    monkeypatch.setattr(cluster.socket, "getaddrinfo", lambda *a, **k: infos)
    assert cluster.resolve("node2", 2) == ["10.0.0.2", "fd00::2"]

    def fail(*a, **k):
        raise OSError(-2, "Name or service not known")
    monkeypatch.setattr(cluster.socket, "getaddrinfo", fail)
    assert cluster.resolve("nowhere", 2) == []


# ----------------------------------------------------------------------------- fencing proof

def _history(*events):
    return ("<pacemaker-result api-version='2.25'><list name='fencing history'>%s</list>"
            "<status code='0' message='OK'/></pacemaker-result>"
            % "".join("<fence_event action='reboot' target='%s' status='%s'%s/>"
                      % (t, st, " completed='%s'" % c if c else "") for t, st, c in events))


def test_fence_history_newest_action_per_target():
    h = cluster.parse_fence_history(_history(
        ("n1", "success", "2026-12-01 15:00:00Z"), ("n1", "failed", "2026-12-01 15:10:00Z"),
        ("n2", "failed", "2026-12-01 15:00:00Z"), ("n2", "success", "2026-12-01 15:10:00Z"),
        ("n3", "success", "2026-12-01 15:00:00Z"), ("n3", "pending", None)))
    assert h["n1"][0] == "failed"                       # a later failure: not fenced
    assert h["n2"] == ("success", cluster._epoch("2026-12-01 15:10:00Z"))
    assert h["n3"] == ("pending", None)


def _left(*names):
    return {n: NodeInfo(n, LEFT) for n in names}


def test_confirm_fenced_needs_success_and_no_activity_since():
    t = cluster._epoch("2026-12-01 15:41:31Z")
    nodes = _left("a", "b", "c", "d", "e")
    nodes["e"].state = MEMBER
    history = {"a": ("success", t), "b": ("success", t), "c": ("failed", t),
               "e": ("success", t)}
    activity = {"b": t + 13, "a": t - 100}
    cluster.confirm_fenced(nodes, history, activity)
    assert nodes["a"].state == GONE and "fenced at 2026-12-01 15:41:31Z" in nodes["a"].note
    assert nodes["b"].state == LEFT and "active again since" in nodes["b"].note  # rejoined
    assert nodes["c"].state == LEFT       # failed fencing
    assert nodes["d"].state == LEFT       # never fenced: left cleanly
    assert nodes["e"].state == MEMBER     # online now: fenced earlier means nothing
    same_second = _left("x")
    cluster.confirm_fenced(same_second, {"x": ("success", t)}, {"x": t})
    assert same_second["x"].state == LEFT  # 1 s resolution: equal counts as after


@pytest.mark.parametrize("broken", ["stonith_admin", "status"])
def test_nothing_counts_as_fenced_when_the_proof_cannot_be_read(broken):
    def answer(argv):
        if argv[0] == "crm_mon":
            return _result(argv, out=CRM_MON)
        if argv[0] == "stonith_admin":
            if broken == "stonith_admin":
                return _result(argv, rc=1, err="stonith_admin: Connection refused")
            return _result(argv, out=_history(("node3", "success", "2026-11-26 01:00:00Z")))
        if argv[:4] == ["cibadmin", "-Q", "-o", "status"]:
            if broken == "status":
                return _result(argv, rc=1, err="cibadmin: timeout")
            return _result(argv, out="<status/>")
        return _result(argv, out=CIB_NODES)
    cl, _ = _cluster(answer)
    assert cl.nodes()["node3"].state == LEFT


def test_fenced_node_from_the_tools():
    def answer(argv):
        if argv[0] == "crm_mon":
            return _result(argv, out=CRM_MON)
        if argv[0] == "stonith_admin":
            return _result(argv, out=_history(("node3", "success", "2026-11-26 01:00:00Z")))
        if argv[:4] == ["cibadmin", "-Q", "-o", "status"]:
            return _result(argv, out="<status/>")
        return _result(argv, out=CIB_NODES)
    cl, _ = _cluster(answer)
    nodes = cl.nodes()
    assert nodes["node3"].state == GONE and nodes["node4"].state == UNCLEAN


def test_offline_node_with_permanent_maintenance_attribute_is_maintenance():
    cib = CIB_NODES.replace('<node id="2" uname="node2"/>', '''<node id="4" uname="node4"/>
  <node id="3b" uname="rnode5"><instance_attributes id="m"><nvpair id="m1" name="maintenance"
    value="true"/></instance_attributes></node>''')

    def answer(argv):
        if argv[0] == "crm_mon":
            return _result(argv, out=CRM_MON)
        if argv[0] == "stonith_admin":
            return _result(argv, out=_history(("rnode5", "success", "2026-11-26 01:00:00Z")))
        if argv[:4] == ["cibadmin", "-Q", "-o", "status"]:
            return _result(argv, out="<status/>")
        return _result(argv, out=cib)
    cl, _ = _cluster(answer)
    assert cl.nodes()["rnode5"].state == MAINTENANCE
