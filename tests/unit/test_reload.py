"""Reload without restart (issue 13), in the OCF 1.0 form Pacemaker 2.1 honours and ocf-tester
accepts: the meta-data advertises ``reload``, declares OCF version 1.0, and marks with
unique="1" exactly the parameters whose change must restart the resource. The oracle is the
issue: the domain definition and the hypervisor restart the guest; node_addresses,
blocklist_expire, ceph_user and CephHealth's dampen do not.
"""

import subprocess
from pathlib import Path

import pytest
from lxml import etree

import fakes
from test_agent_flows import World
from test_cephhealth import Node
from vmceph import ocf
from vmceph.cephhealth import SPEC as HEALTH_SPEC
from vmceph.rbdvd_params import SPEC as RBDVD_SPEC

ROOT = Path(__file__).resolve().parents[2]
DTD = Path("/usr/share/resource-agents/ra-api-1.dtd")


def _metadata(name):
    r = subprocess.run([str(ROOT / "agents" / name), "meta-data"], capture_output=True,
                       timeout=30, check=True)
    return etree.fromstring(r.stdout.split(b"\n", 2)[2])


@pytest.fixture(scope="module", params=["RBDVirtualDomain", "CephHealth"])
def md(request):
    return request.param, _metadata(request.param)


# ------------------------------------------------------------------------------ meta-data

def test_metadata_advertises_legacy_reload_as_ocf_1_0(md):
    """Pacemaker 2.1 uses the legacy reload only for an agent whose <version> is below 1.1
    (controld_metadata.c), and the DTD ocf-tester validates against has no reload-agent
    and no reloadable attribute."""
    _name, root = md
    assert root.findtext("version") == "1.0"
    actions = [a.get("name") for a in root.iterfind("actions/action")]
    assert "reload" in actions
    assert "reload-agent" not in actions
    assert all(p.get("reloadable") is None for p in root.iterfind("parameters/parameter"))


@pytest.mark.parametrize("agent,restarts", [
    ("RBDVirtualDomain", {"config", "hypervisor"}),
    ("CephHealth", {"attribute"}),
])
def test_exactly_the_restarting_parameters_are_unique(agent, restarts):
    root = _metadata(agent)
    unique = {p.get("name") for p in root.iterfind("parameters/parameter")
              if p.get("unique") == "1"}
    assert unique == restarts


@pytest.mark.parametrize("agent,name", [
    ("RBDVirtualDomain", "node_addresses"), ("RBDVirtualDomain", "blocklist_expire"),
    ("RBDVirtualDomain", "ceph_user"), ("RBDVirtualDomain", "migrate_options"),
    ("RBDVirtualDomain", "monitor_scripts"), ("CephHealth", "dampen"),
    ("CephHealth", "ceph_user"), ("CephHealth", "check_colors"),
])
def test_the_issues_examples_reload(agent, name):
    root = _metadata(agent)
    p = root.find("parameters/parameter[@name='%s']" % name)
    assert p.get("unique") == "0"


def test_monitor_depths_10_and_20_are_advertised():
    root = _metadata("RBDVirtualDomain")
    depths = sorted(int(a.get("depth", "0")) for a in root.iterfind("actions/action")
                    if a.get("name") == "monitor")
    assert depths == [0, 10, 20]
    # distinct intervals: Pacemaker identifies a recurring operation by name and interval
    intervals = [a.get("interval") for a in root.iterfind("actions/action")
                 if a.get("name") == "monitor"]
    assert len(set(intervals)) == 3


def test_metadata_with_reload_is_valid_for_ocf_tester(tmp_path):
    """What ocf-tester runs: xmllint --valid with ra-api-1.dtd next to the document."""
    if not DTD.exists():
        pytest.skip("RA-API-1 DTD CHECK NOT RUN: %s missing (make deps)" % DTD)
    for agent in ("RBDVirtualDomain", "CephHealth"):
        (tmp_path / "ra-api-1.dtd").write_bytes(DTD.read_bytes())
        doc = tmp_path / (agent + ".xml")
        doc.write_bytes(subprocess.run([str(ROOT / "agents" / agent), "meta-data"],
                                       capture_output=True, check=True).stdout)
        r = subprocess.run(["xmllint", "--noout", "--valid", str(doc)], capture_output=True,
                           text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr


def test_the_decision_is_in_the_parameter_reference():
    text = (ROOT / "docs" / "parameters.md").read_text()
    assert ocf.RELOAD_DECISION in text
    assert "| `hypervisor` (restarts) |" in text


# ------------------------------------------------------------------- RBDVirtualDomain

@pytest.fixture
def w(tmp_path, monkeypatch):
    world = World(tmp_path, monkeypatch)
    yield world
    world.close()


def test_reload_leaves_the_running_guest_alone(w):
    assert w.start() == 0, w.err
    before = list(w.timeline)
    w.bin.add("crm_resource")   # fresh call log
    open(w.bin.log, "w").close()
    assert w.run("reload", {"node_addresses": "node1=10.252.0.1 node2=10.252.0.2",
                            "blocklist_expire": "600"}) == 0, w.err
    assert w.node1.running("vm1")
    new = [e for e in w.timeline[len(before):] if e[0].startswith("libvirt")]
    # at most a look: no create, destroy, shutdown, suspend, resume, save, undefine
    assert {e[1] for e in new} <= {"open", "lookupByName", "lookupByUUIDString", "XMLDesc"}
    assert "keeps running untouched" in w.logfile.read_text()


def test_reload_applies_the_utilization_parameters(w):
    assert w.start() == 0, w.err
    open(w.bin.log, "w").close()
    assert w.run("reload", {"unset_utilization_cpu": "true"}) == 0, w.err
    assert ["crm_resource", "-r", "vm1", "-z", "-d", "cpu"] in w.bin.calls("crm_resource")


def test_reload_validates_the_new_values(w):
    assert w.start() == 0, w.err
    assert w.run("reload", {"blocklist_expire": "5"}) == ocf.OCF_ERR_CONFIGURED
    assert "blocklist_expire" in w.reason
    assert w.node1.running("vm1")


def test_reload_agent_is_the_same_action(w):
    """Pacemaker 2.1's controller asks for reload-agent when it has no cached meta-data."""
    assert w.start() == 0, w.err
    assert w.run("reload-agent", {"blocklist_expire": "600"}) == 0, w.err
    assert w.node1.running("vm1")


def test_reload_when_nothing_runs_here(w):
    assert w.run("reload") == 0, w.err
    assert not w.node1.running("vm1")


# ------------------------------------------------------------------------- CephHealth

@pytest.fixture
def node(tmp_path, monkeypatch):
    n = Node(tmp_path, monkeypatch)
    yield n
    n.ceph.close()


def test_cephhealth_reload_publishes_with_the_new_dampen(node):
    assert node.run("start") == 0, node.err
    assert node.run("reload", {"dampen": "30s"}) == 0, node.err
    assert node.attrd()[-1] == ["-n", "#health-ceph", "-B", "green", "-d", "30s"]
    # never removed in between: no VM moves because of the change
    assert not any("-D" in c for c in node.attrd())


def test_cephhealth_reload_of_a_stopped_instance_publishes_nothing(node):
    assert node.run("reload", {"dampen": "30s"}) == 0, node.err
    assert node.attrd() == []
