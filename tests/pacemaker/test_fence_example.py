"""cib-examples/fence-power-first.{sh,crm,xml} (the reverse topology: power first,
fence_vmceph last) checked by Pacemaker's own tools, offline, in all three forms.

pcs.sh then fence-power-first.sh, or crmsh.crm then fence-power-first.crm, run on an empty
three-node CIB file (or cluster.xml with fence-power-first.xml applied by cibadmin), in a private mount
namespace where the checkout's agents appear as /usr/lib/ocf/resource.d/vmceph and the
checkout's fence_vmceph as /usr/sbin/fence_vmceph (overlays; the host is not touched), so
pcs validates the device against the agent's real meta-data. Then: crm_verify accepts the
result, the topology is IPMI, PDU, fence_vmceph for every node with no unfencing, and
crm_simulate fences a failed node and recovers its VMs with the device in place.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "cib-examples"
AGENTS = REPO / "agents"
NODES = ("node1", "node2", "node3")

pytestmark = [pytest.mark.pacemaker, pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("pcs", "cibadmin", "crm_verify", "crm_simulate",
                                           "unshare"))
    or not os.path.exists("/usr/share/fence/fencing.py") or os.geteuid() != 0,
    reason="!!! pcs/pacemaker tools, fence-agents or root missing: the fence_vmceph "
           "example is NOT verified !!!")]


def run(cmd, cib=None, prefix=(), check=True):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if cib:
        env["CIB_file"] = str(cib)
    p = subprocess.run([*prefix, *map(str, cmd)], env=env, capture_output=True, text=True,
                       timeout=600)
    if check:
        assert p.returncode == 0, "%s\n%s\n%s" % (cmd, p.stdout, p.stderr)
    return p


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """A private mount namespace in which the checkout's agents and fence_vmceph are
    installed, so pcs and crmsh check the configuration against their real meta-data."""
    d = tmp_path_factory.mktemp("fence-example")
    (d / "ocf").mkdir()
    (d / "ocf" / "vmceph").symlink_to(AGENTS.resolve())
    (d / "sbin").mkdir()
    (d / "sbin" / "fence_vmceph").symlink_to((AGENTS / "fence" / "fence_vmceph").resolve())
    prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c",
              'mount -t overlay overlay -o lowerdir="$0/ocf":/usr/lib/ocf/resource.d '
              '/usr/lib/ocf/resource.d && mount -t overlay overlay -o lowerdir="$0/sbin":'
              '/usr/sbin /usr/sbin && exec "$@"', str(d))
    probe = run(["stonith_admin", "--metadata", "-a", "fence_vmceph"], prefix=prefix,
                check=False)
    if probe.returncode != 0:
        pytest.skip("!!! overlay of /usr/sbin failed, fence_vmceph example NOT verified: %s"
                    % probe.stderr.strip())
    return prefix


def empty_cib(path):
    path.write_text(run(["cibadmin", "--empty"]).stdout)
    for i, name in enumerate(NODES, 1):
        run(["cibadmin", "-o", "nodes", "-C", "-X", '<node id="%d" uname="%s"/>' % (i, name)],
            cib=path)
    return path


def _pcs(path, prefix):
    empty_cib(path)
    p1 = run(["env", "CIB=%s" % path, EXAMPLES / "pcs.sh"], prefix=prefix)
    run(["env", "CIB=%s" % path, EXAMPLES / "fence-power-first.sh"], prefix=prefix)
    assert "--force" not in p1.stderr, p1.stderr   # pcs saw the real agents


def _crmsh(path, prefix):
    empty_cib(path)
    run(["crm", "configure", "load", "update", EXAMPLES / "crmsh.crm"], cib=path, prefix=prefix)
    # crm -f exits 1 when a command of the script fails (e.g. a second fencing_topology)
    p = run(["crm", "-f", EXAMPLES / "fence-power-first.crm"], cib=path, prefix=prefix)
    assert "ERROR" not in p.stdout + p.stderr, p.stdout + p.stderr


def _xml(path, prefix):
    shutil.copy(EXAMPLES / "cluster.xml", path)
    run(["cibadmin", "-R", "-o", "fencing-topology", "-x", EXAMPLES / "fence-power-first.xml"],
        cib=path)
    run(["crm_resource", "-r", "fence-ceph", "-m", "-d", "provides"], cib=path)


FORMS = {"pcs": _pcs, "crmsh": _crmsh, "xml": _xml}


@pytest.fixture(scope="module", params=sorted(FORMS))
def cib(request, prefix, tmp_path_factory):
    """The three-node example with the power-first topology applied, in each of the three
    forms: pcs.sh + fence-power-first.sh, crmsh.crm + fence-power-first.crm, cluster.xml +
    fence-power-first.xml (with the two commands its comment gives)."""
    path = tmp_path_factory.mktemp("power-first-" + request.param) / "cib.xml"
    FORMS[request.param](path, prefix)
    return path


# A bare configuration file has no status: no quorum, nodes never seen (unclean). These
# two warnings are about the absent state, not the configuration (as in
# test_cib_examples.py); crm_verify 2.1.5 exits 78 on warnings alone.
EXPLAINED = [re.compile(r"Fencing and resource management disabled due to lack of quorum"),
             re.compile(r"Node node[123] is unclean but cannot be fenced")]
DIAG = re.compile(r"^\(\S+\)\s+(warning|error):\s*(.*)$")


def test_crm_verify_accepts_it(cib):
    path = cib
    p = run(["crm_verify", "-x", path, "-VV"], check=False)
    diags = [m.groups() for m in map(DIAG.match, p.stderr.splitlines()) if m]
    assert not [m for level, m in diags if level == "error"], p.stderr
    assert not [m for level, m in diags if level == "warning"
                and not any(e.search(m) for e in EXPLAINED)], p.stderr
    assert p.returncode in (0, 78) and "Errors found" not in p.stderr, p.stderr


def test_device_and_topology(cib):
    path = cib
    root = etree.parse(str(path)).getroot()
    dev = root.find(".//primitive[@id='fence-ceph']")
    assert dev is not None and dev.get("class") == "stonith" and dev.get("type") == "fence_vmceph"
    params = {nv.get("name"): nv.get("value") for nv in dev.iterfind("instance_attributes/nvpair")}
    assert params["pcmk_host_list"] == "node1 node2 node3"
    assert params["ceph_user"] == "fence" and "node_addresses" not in params
    meta = {nv.get("name"): nv.get("value") for nv in dev.iterfind("meta_attributes/nvpair")}
    assert meta.get("allow-unhealthy-nodes") == "true"
    assert "provides" not in meta, "a last level must not make Pacemaker unfence every node"
    levels = {(l.get("target"), int(l.get("index"))): l.get("devices")
              for l in root.iter("fencing-level")}
    expected = {}
    for n in NODES:
        expected.update({(n, 1): "fence-ipmi-" + n, (n, 2): "fence-pdu", (n, 3): "fence-ceph"})
    assert levels == expected


def test_a_failed_node_is_still_fenced_and_its_vms_recovered(cib, tmp_path):
    """Three nodes online with quorum, everything placed; then node2 fails: the plan
    fences node2 (through the topology; crm_simulate runs no device) and starts every VM
    it ran elsewhere, after the fence."""
    path = cib
    live = tmp_path / "live.xml"
    run(["crm_simulate", "-x", path, "-S", "-q", "true", "-u", "node1", "-u", "node2",
         "-u", "node3", "-O", live])
    for n in NODES:
        run(["crm_attribute", "-N", n, "-n", "#health-ceph", "-v", "green", "-l", "reboot"],
            cib=live)
    run(["crm_simulate", "-x", live, "-S", "-O", live])
    status = etree.fromstring(run(["crm_mon", "-1", "--output-as=xml"], cib=live)
                              .stdout.encode())
    on2 = [r.get("id") for r in status.iter("resource") if r.get("id", "").startswith("vm")
           and any(n.get("name") == "node2" for n in r.iter("node"))]
    p = run(["crm_simulate", "-x", live, "-S", "--node-fail", "node2", "--output-as=xml"])
    root = etree.fromstring(p.stdout.encode())
    fenced = {(f.get("target"), f.get("op")) for f in root.iterfind("transition/fencing_action")}
    assert fenced == {("node2", "reboot")}, p.stdout[-3000:]
    starts = {(a.get("resource"), a.get("node")) for a in root.iterfind("transition/rsc_action")
              if a.get("op") == "start"}
    assert on2, "node2 ran no VM: the scenario proves nothing"
    for vm in on2:
        assert [n for r, n in starts if r == vm and n != "node2"], (vm, starts)
