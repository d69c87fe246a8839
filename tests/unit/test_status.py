"""vmceph status / explain (vmceph.status): Pacemaker's XML parsed, every flagged mismatch
provoked on a hand-made view (issue 14: "Pacemaker says node1, the writer is on node2; a
writer with no resource" and the others docs/status.md lists), the --json schema, colour
only on a terminal."""

import io
import json

import pytest

from vmceph import status
from vmceph.safety import ImageFacts, Watcher, Locker

CRM_MON = """<pacemaker-result api-version="2.25" request="crm_mon -1 -A --output-as=xml">
  <summary><cluster_options maintenance-mode="false"/></summary>
  <nodes>
    <node name="node1" id="1" online="true" maintenance="false" unclean="false"/>
    <node name="node2" id="2" online="true" maintenance="false" unclean="false"/>
    <node name="node3" id="3" online="false" maintenance="false" unclean="true"/>
  </nodes>
  <resources>
    <resource id="fence-vmlab" resource_agent="stonith:fence_vmlab" role="Started" active="true" failed="false" managed="true" nodes_running_on="1">
      <node name="node1" id="1" cached="true"/>
    </resource>
    <resource id="vm1" resource_agent="ocf:vmceph:RBDVirtualDomain" role="Started" active="true" failed="false" managed="true" nodes_running_on="1">
      <node name="node1" id="1" cached="true"/>
    </resource>
    <group id="g">
      <resource id="vm2" resource_agent="ocf:vmceph:RBDVirtualDomain" role="Stopped" active="false" failed="false" managed="true" nodes_running_on="0"/>
    </group>
  </resources>
  <node_attributes>
    <node name="node1"><attribute name="vmceph-ceph-addrs" value="10.0.0.1"/></node>
    <node name="node2"><attribute name="vmceph-ceph-addrs" value="10.0.0.2"/></node>
  </node_attributes>
  <failures>
    <failure op_key="vm2_start_0" node="node2" exitstatus="error" exitreason="start refused: rbd/vm2-d0 is written by client.4242 at 10.0.0.1:0/1 on node1, a live cluster member" exitcode="1" call="9" status="complete" last-rc-change="Tue Dec  1 15:41:18 2026" queued="0" exec="120" interval="0" task="start"/>
    <failure op_key="vm2_migrate_to_0" node="node1" exitstatus="error" exitreason="older" exitcode="1" call="7" status="complete" last-rc-change="Tue Dec  1 15:40:18 2026" queued="0" exec="120" interval="0" task="migrate_to"/>
  </failures>
  <status code="0" message="OK"/>
</pacemaker-result>
"""

CIB_RESOURCES = """<resources>
  <primitive id="fence-vmlab" class="stonith" type="fence_vmlab"/>
  <primitive id="vm1" class="ocf" provider="vmceph" type="RBDVirtualDomain">
    <instance_attributes id="vm1-ia">
      <nvpair id="vm1-c" name="config" value="ceph:rbd/vm1"/>
      <nvpair id="vm1-u" name="ceph_user" value="vmceph"/>
      <nvpair id="vm1-t" name="migration_transport" value="tcp"/>
    </instance_attributes>
  </primitive>
  <group id="g">
    <primitive id="vm2" class="ocf" provider="vmceph" type="RBDVirtualDomain">
      <instance_attributes id="vm2-ia">
        <nvpair id="vm2-c" name="config" value="ceph:rbd/vm2"/>
      </instance_attributes>
    </primitive>
  </group>
</resources>
"""


# ------------------------------------------------------------------ parsing

def test_parse_resources_finds_primitives_in_groups():
    rs = {r["id"]: r for r in status.parse_resources(CRM_MON)}
    assert rs["vm1"]["nodes"] == ["node1"] and rs["vm1"]["role"] == "Started"
    assert rs["vm2"]["nodes"] == [] and rs["vm2"]["agent"] == status.AGENT


def test_parse_failures_newest_first_with_exit_reason():
    f = status.parse_failures(CRM_MON)["vm2"]
    assert [x["task"] for x in f] == ["start", "migrate_to"]
    assert f[0]["node"] == "node2" and f[0]["exitcode"] == 1
    assert "live cluster member" in f[0]["exitreason"]


def test_parse_primitives_params():
    p = status.parse_primitives(CIB_RESOURCES)
    assert p["vm1"]["agent"] == status.AGENT
    assert p["vm1"]["params"]["config"] == "ceph:rbd/vm1"
    assert p["vm2"]["params"] == {"config": "ceph:rbd/vm2"}


def test_pacemaker_xml_error_is_a_sentence():
    class R:
        rc, out = 102, ""
        err = ('<pacemaker-result><status code="102" message="Not connected"><errors>'
               '<error>crm_mon: Connection to cluster failed</error></errors></status>'
               '</pacemaker-result>')
    assert status._pcmk_error("crm_mon", R()) == \
        "crm_mon failed (rc 102): Not connected; crm_mon: Connection to cluster failed"


# ------------------------------------------------------------------ every mismatch

def row(placed=("node1",), libvirt=None, writers=()):
    return {"pacemaker_nodes": list(placed), "libvirt": libvirt or {},
            "images": [{"spec": "rbd/vm1-d0",
                        "writers": [{"addr": a + ":0/1", "node": n, "node_state": "member"}
                                    for a, n in writers]}]}


def test_consistent_row_has_no_flag():
    assert status.judge(row(libvirt={"node1": "running", "node2": "shut off"},
                            writers=[("10.0.0.1", "node1")])) == []


def test_flag_writer_on_another_node_than_pacemaker_says():
    flags = status.judge(row(writers=[("10.0.0.2", "node2")]))
    assert flags == ["Pacemaker runs it on node1, but rbd/vm1-d0 is written from node2"]


def test_flag_writer_with_no_resource():
    flags = status.judge(row(placed=(), writers=[("10.0.0.2", "node2")]))
    assert len(flags) == 1 and "a writer with no resource" in flags[0] and "node2" in flags[0]


def test_flag_writers_on_two_nodes():
    flags = status.judge(row(writers=[("10.0.0.1", "node1"), ("10.0.0.2", "node2")]))
    assert flags == ["SPLIT BRAIN? rbd/vm1-d0 has writers on node1, node2"]


def test_flag_writer_of_no_known_node():
    flags = status.judge(row(writers=[("10.9.9.9", None)]))
    assert "10.9.9.9:0/1, which is no known node's address" in flags[0]


def test_flag_libvirt_disagrees_with_pacemaker():
    assert status.judge(row(libvirt={"node1": "shut off"})) == [
        "Pacemaker runs it on node1, libvirt there says shut off"]
    assert status.judge(row(libvirt={"node1": "running", "node2": "paused"})) == [
        "libvirt runs it on node2 (paused), where Pacemaker does not"]
    assert status.judge(row(libvirt={"node1": None})) == []     # unknown is no mismatch


def test_two_writers_during_a_live_migration_are_expected():
    r = row(writers=[("10.0.0.1", "node1"), ("10.0.0.2", "node2")],
            libvirt={"node1": "running", "node2": "paused"})
    assert len(status.judge(r)) == 2
    r["pending"] = "Migrating"
    assert status.judge(r) == []
    # the move done, Pacemaker not told yet: the writer on the target only, source shut off
    r = row(writers=[("10.0.0.2", "node2")], libvirt={"node1": "shut off"})
    assert len(status.judge(r)) == 2
    r["role"] = "Migrating"
    assert status.judge(r) == []
    r["images"][0]["writers"].append({"addr": "10.9.9.9:0/1", "node": None})
    assert status.judge(r) == ["rbd/vm1-d0 is written from 10.9.9.9:0/1, which is no known "
                               "node's address"]


def test_flag_active_on_several_nodes():
    assert "several nodes: node1, node2" in status.judge(row(placed=("node1", "node2")))[0]
    r = row(placed=("node2", "node1"), writers=[("10.0.0.2", "node2")])
    r["role"] = "Migrating"        # migrate_from done, the source not stopped yet (lab)
    assert status.judge(r) == []


def test_failure_times_of_both_formats_order_newest_first():
    assert status._when("2026-12-01 16:29:01Z") - status._when("Tue Dec  1 16:28:01 2026") \
        == 60


def test_unhealthy_node_is_flagged():
    assert status.judge_nodes([{"name": "node2", "health_ceph": "red"},
                               {"name": "node1", "health_ceph": "green"}]) == [
        "node node2: #health-ceph is red"]


# ------------------------------------------------------------------ the whole view

class Result:
    def __init__(self, rc, out="", err=""):
        self.rc, self.out, self.err = rc, out, err


XML1 = """<domain type='kvm'><name>vm1</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
<devices><disk type='network' device='disk'><source protocol='rbd' name='rbd/vm1-d0'/>
<target dev='vda'/></disk></devices></domain>"""
XML2 = XML1.replace("vm1", "vm2").replace("4dea22b3", "5dea22b3")


class FakeSession:
    def __init__(self, watchers):
        self.watchers = watchers
        self.closed = False

    def quorum(self):
        return True, "quorum node1,node2 of node1,node2,node3", [], []

    def client_addrs(self):
        return ["10.0.0.1"]

    def inspect_all(self, specs):
        return [ImageFacts(s, watchers=tuple(Watcher(a, 4242, 1) for a in
                                             self.watchers.get(s, ())),
                           lockers=tuple(Locker("client.4242", "auto 1", a) for a in
                                         self.watchers.get(s, ())[:1]))
                for s in specs]

    def close(self):
        self.closed = True


class FakeSources:
    def __init__(self, watchers, libvirt):
        self.watchers, self.libvirt = watchers, libvirt
        self.log = None
        self.sessions = []
        self.calls = []

    def runner(self, argv, timeout, log=None, **kw):
        self.calls.append(argv)
        assert timeout > 0
        if argv[0] == "crm_mon":
            return Result(0, CRM_MON)
        if argv[:4] == ["cibadmin", "-Q", "-o", "resources"]:
            return Result(0, CIB_RESOURCES)
        if argv[0] == "cibadmin":
            return Result(0, "<nodes/>" if "nodes" in argv else "<status/>")
        if argv[0] == "attrd_updater":
            node = argv[argv.index("-N") + 1]
            value = {"node1": "green", "node2": "red"}.get(node)
            assert "--output-as=xml" in argv
            return Result(0, '<pacemaker-result api-version="2.25"><attribute '
                             'name="#health-ceph" value="%s" host="%s"/><status code="0" '
                             'message="OK"/></pacemaker-result>' % (value, node)) \
                if value else Result(1)
        if argv[0] == "stonith_admin":
            return Result(0, "<pacemaker-result><fence_history/></pacemaker-result>")
        if argv[0] == "crm_node":
            return Result(0, "node1\n")
        raise AssertionError("unexpected command %s" % argv)

    def command(self, argv, cap=10.0):
        return self.runner(argv, timeout=cap)

    def cluster(self):
        from vmceph.cluster import Cluster
        from vmceph.ocf import Deadline
        return Cluster(Deadline(10, margin_s=0), None, runner=self.runner)

    def ceph(self, conf, user, keyring):
        s = FakeSession(self.watchers)
        self.sessions.append(s)
        return s

    def libvirt_state(self, uri, name, uuid):
        self.calls.append(["libvirt", uri, name])
        return self.libvirt.get((uri, name))

    def local_node(self):
        return "node1"


@pytest.fixture
def defs(monkeypatch):
    from vmceph import defstore

    def current(self, name):
        return {"vm1": {"xml": XML1, "version": 1}, "vm2": {"xml": XML2, "version": 1}}[name]
    monkeypatch.setattr(defstore.Store, "current", current)
    monkeypatch.setattr(defstore, "RadosBackend", lambda *a: None)


LV = {("qemu:///system", "vm1"): "running", ("qemu:///system", "vm2"): "shut off",
      ("qemu+tcp://node1/system", "vm1"): "running"}


def test_collect_consistent_cluster(defs):
    src = FakeSources({"rbd/vm1-d0": ["10.0.0.1:0/11"]}, LV)
    view = status.collect(src)
    rs = {r["id"]: r for r in view["resources"]}
    assert set(rs) == {"vm1", "vm2"}                       # not the fence device
    assert rs["vm1"]["flags"] == [] and rs["vm1"]["domain"] == "vm1"
    assert rs["vm1"]["images"][0]["writers"][0]["node"] == "node1"
    assert rs["vm1"]["libvirt"] == {"node1": "running"}
    assert rs["vm2"]["last_failure"]["task"] == "start"
    assert {n["name"]: n["health_ceph"] for n in view["nodes"]} == {
        "node1": "green", "node2": "red", "node3": None}
    assert {n["name"]: n["addresses"] for n in view["nodes"]}["node2"] == ["10.0.0.2"]
    assert "node node2: #health-ceph is red" in view["flags"]
    assert all(s.closed for s in src.sessions)


def test_collect_flags_the_writer_on_node2_and_the_writer_of_a_stopped_resource(defs):
    src = FakeSources({"rbd/vm1-d0": ["10.0.0.2:0/11"], "rbd/vm2-d0": ["10.0.0.2:0/12"]}, LV)
    view = status.collect(src)
    rs = {r["id"]: r for r in view["resources"]}
    assert rs["vm1"]["flags"] == [
        "Pacemaker runs it on node1, but rbd/vm1-d0 is written from node2"]
    assert "a writer with no resource" in rs["vm2"]["flags"][0]
    text = status.render(view, colour=False)
    assert "MISMATCH: Pacemaker runs it on node1, but rbd/vm1-d0 is written from node2" in text
    assert "\033[" not in text
    assert "\033[31mMISMATCH" in status.render(view, colour=True)


def test_collect_without_pacemaker_says_so(defs):
    src = FakeSources({}, LV)
    src.runner = lambda argv, timeout, log=None: Result(102, "", "not connected")
    view = status.collect(src)
    assert view["pacemaker"]["ok"] is False and view["resources"] == []
    assert any(f.startswith("Pacemaker: crm_mon failed (rc 102)") for f in view["flags"])


# A hand-written schema of --json (docs/status.md); jsonschema is not installed here, so a
# small checker: every key present, of its type, nothing unknown.
S, I, B, N = str, int, bool, type(None)
FAILURE = {"op": S, "task": S, "node": S, "exitcode": (I, N), "exitstatus": (S, N),
           "exitreason": S, "when": S}
WRITER = {"addr": S, "entity": S, "node": (S, N), "node_state": (S, N)}
HOLDER = {"addr": S, "entity": S, "node": (S, N)}
IMAGE = {"spec": S, "exists": (B, N), "error": (S, N), "writers": [WRITER],
         "lock_holders": [HOLDER]}
RESOURCE = {"id": S, "domain": (S, N), "config": (S, N), "role": (S, N), "managed": B,
            "failed": B, "pacemaker_nodes": [S], "libvirt": {S: (S, N)}, "images": [IMAGE],
            "note": (S, N), "last_failure": (FAILURE, N), "flags": [S], "pending": (S, N),
            "?libvirt_errors": {S: S}}
NODE = {"name": S, "state": S, "health_ceph": (S, N), "addresses": [S]}
SCHEMA = {"schema": I, "generated": S, "local_node": S,
          "pacemaker": {"ok": B, "error": (S, N)}, "ceph": {"ok": B, "detail": (S, N)},
          "nodes": [NODE], "resources": [RESOURCE], "flags": [S]}


def conforms(value, schema, path="$"):
    """Raise AssertionError where ``value`` does not follow ``schema``."""
    if isinstance(schema, tuple):
        for alternative in schema:
            try:
                conforms(value, alternative, path)
                return
            except AssertionError:
                continue
        raise AssertionError("%s: %r matches none of %r" % (path, value, schema))
    if isinstance(schema, list):
        assert isinstance(value, list), "%s: not a list" % path
        for k, v in enumerate(value):
            conforms(v, schema[0], "%s[%d]" % (path, k))
        return
    if isinstance(schema, dict):
        assert isinstance(value, dict), "%s: not an object" % path
        if len(schema) == 1 and list(schema)[0] is S:      # a map of strings to values
            for k, v in value.items():
                assert isinstance(k, str), path
                conforms(v, schema[S], "%s.%s" % (path, k))
            return
        required = {k for k in schema if not k.startswith("?")}
        allowed = {k.lstrip("?") for k in schema}
        assert required <= set(value), "%s: missing %s" % (path, required - set(value))
        assert set(value) <= allowed, "%s: unknown %s" % (path, set(value) - allowed)
        for k, v in value.items():
            conforms(v, schema[k] if k in schema else schema["?" + k], "%s.%s" % (path, k))
        return
    assert not (schema is I and isinstance(value, bool)), "%s: bool is not int" % path
    assert isinstance(value, schema), "%s: %r is not %s" % (path, value, schema.__name__)


def test_json_output_follows_the_schema(defs, monkeypatch, capsys):
    src = FakeSources({"rbd/vm1-d0": ["10.0.0.2:0/11"], "rbd/vm2-d0": ["10.9.9.9:0/12"]}, LV)

    class Args:
        json, watch, timeout = True, None, 10.0
        ceph_conf = ceph_user = ceph_keyring = ""
    rc = status.cmd_status(Args(), src_factory=lambda deadline: src)
    view = json.loads(capsys.readouterr().out)
    assert rc == 1                                  # flagged mismatches: non-zero
    conforms(view, SCHEMA)
    assert view["resources"][0]["last_failure"] is None
    assert view["resources"][1]["last_failure"]["exitcode"] == 1


def test_watch_refreshes_with_a_fresh_view_each_time(defs, monkeypatch, capsys):
    """--watch: a new view (new sources, new deadline) every SECONDS, until interrupted;
    the sleep is the one given (at least 0.5 s)."""
    views = [FakeSources({"rbd/vm1-d0": ["10.0.0.2:0/11"]}, LV),
             FakeSources({"rbd/vm1-d0": ["10.0.0.3:0/12"]}, LV)]
    made, slept = [], []

    def factory(deadline):
        if len(made) == len(views):
            raise KeyboardInterrupt     # the operator's ^C
        made.append(deadline)
        return views[len(made) - 1]
    monkeypatch.setattr(status.time, "sleep", slept.append)

    class Args:
        json, watch, timeout = True, 0.1, 10.0
        ceph_conf = ceph_user = ceph_keyring = ""
    with pytest.raises(KeyboardInterrupt):
        status.cmd_status(Args(), src_factory=factory)
    out = capsys.readouterr().out
    assert "\033[2J" not in out                  # no screen clearing when not on a terminal
    dec, i, docs = json.JSONDecoder(), 0, []
    while i < len(out):
        doc, i = dec.raw_decode(out, i)
        docs.append(doc)
        while i < len(out) and out[i].isspace():
            i += 1
    assert len(docs) == 2 and made[0] is not made[1]
    addrs = [[w["addr"] for r in d["resources"] for img in r["images"] for w in img["writers"]]
             for d in docs]
    assert addrs[0] != addrs[1] and "10.0.0.3:0/12" in addrs[1]
    assert slept == [0.5, 0.5]


def test_schema_checker_catches_a_wrong_type():
    with pytest.raises(AssertionError):
        conforms({"name": "n", "state": 3, "health_ceph": None, "addresses": []}, NODE)
    with pytest.raises(AssertionError):
        conforms({"name": "n", "state": "m", "health_ceph": None}, NODE)


def test_explain_tells_the_last_failure_and_the_decision_now(defs, monkeypatch, capsys):
    src = FakeSources({"rbd/vm2-d0": ["10.0.0.1:0/12"]}, LV)
    seen = {}

    def decide(s, row, node, deadline):
        seen["node"] = node
        return {"decision": "refuse", "may_start": False,
                "reasons": ["rbd/vm2-d0 is written by client.4242 on node1"],
                "would_recover": []}
    monkeypatch.setattr(status, "_decide_now", decide)

    class Args:
        vm, json, timeout = "vm2", False, 10.0
        ceph_conf = ceph_user = ceph_keyring = ""
    assert status.cmd_explain(Args(), src_factory=lambda deadline: src) == 0
    out = capsys.readouterr().out
    assert "last failure: start on node2" in out
    assert "exit reason: start refused: rbd/vm2-d0 is written by client.4242" in out
    assert "now, a start on node2 would be: REFUSE" in out
    assert seen["node"] == "node2"
    assert "MISMATCH" in out and "a writer with no resource" in out
