"""The README's quick start, run as written on the real three-node Pacemaker lab (issue 13),
so it cannot drift from what works.

The shell block between README.md's quickstart markers (tests/vmlab/quickstart.py) runs
unchanged inside node 1 (lab.run), with the lab's names in the variables the block reads
(CEPH_USER, POOL, VM, VM_XML, TO_NODE). Then, as Pacemaker and Ceph see them:
- both resources exist; the health clone carries allow-unhealthy-nodes and interleave on
  the clone, not on the primitive (pcs 0.11 puts a `meta` written after `clone` on the
  primitive: a red node would stop its own CephHealth, which deletes #health-ceph, and
  flap);
- the CephHealth clone runs on every node and #health-ceph is green everywhere;
- the VM runs, once, on TO_NODE, where `crm resource move` sent it, and its QEMU runs there.

The session's lab already runs cib-examples/pcs.sh, whose health clone has the README's
ids: the test saves that clone and the order constraints naming it, deletes it, runs the
quick start, and afterwards removes what the quick start created and puts the saved XML
back (cibadmin), waiting until the session's VMs run and every node is green again.
pcs.sh also sets placement-strategy=balanced with node capacities for cpu and hv_memory
only; the quick start's VM, whose agent sets a host_memory utilization by default, could
then never be placed (first run of this test: crm_simulate assigns it nowhere). The quick
start is written for a cluster without utilization-based placement, so the test runs it
with placement-strategy=default and restores pcs.sh's value afterwards.
`crm resource move` to the node the VM already runs on fails ("Requested item already
exists": CI run of stop 18, where Pacemaker started the quick start's VM on the least
loaded node, the very node the test had chosen as TO_NODE). An administrator moves a VM
to another node; so that the VM starts elsewhere, the test adds a finite location
preference against TO_NODE by resource pattern (it may exist before the resource), which
the move's INFINITY preference overrides, and removes it afterwards.
Reuses the session's lab (tests/e2e/conftest.py `cluster`); ~90 s.
"""

import time
import xml.etree.ElementTree as ET

import pytest

from vmlab import cluster_config, quickstart
from vmlab.util import wait_until, write_file

pytestmark = pytest.mark.e2e

VM = "vm-readme"
IMAGE = f"{VM}-disk0"
CLONE, PRIMITIVE = "ceph-health-clone", "ceph-health"
AWAY = "test-readme-starts-elsewhere"


def cib_xpath(lab, xpath):
    """[element] matching xpath in the live CIB (none: [])."""
    p = lab.run(1, ["cibadmin", "-Q", "--xpath", xpath], timeout=30, check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    root = ET.fromstring(p.stdout)
    return list(root) if root.tag == "xpath-query" else [root]


def meta(element):
    """{name: value} of an element's own meta_attributes (not its children's)."""
    return {nv.get("name"): nv.get("value")
            for ma in element.iterfind("meta_attributes") for nv in ma.iterfind("nvpair")}


def runs_on(lab, vm):
    return cluster_config.placement(lab).get(vm, [])


def test_readme_quickstart_runs_as_written(cluster, invariants, figure):
    lab, cfg, story = cluster.lab, cluster.cfg, cluster.story
    cluster_config.wait_settled(lab, cfg, timeout=180)
    text = quickstart.block()

    saved_clone = cib_xpath(lab, f"//resources/clone[@id='{CLONE}']")
    saved_orders = cib_xpath(lab, f"//constraints/rsc_order[@first='{CLONE}' or @then='{CLONE}']")
    assert len(saved_clone) == 1, "the session's health clone (cib-examples/pcs.sh) is missing"

    xml = lab.path("vms", f"{VM}.xml")  # a path every node sees (vmlab/cluster_config.py)
    write_file(xml, lab.make_domain_xml(VM, [IMAGE]))
    lab.rbd_create(IMAGE)
    # the node that runs fewest of the session's VMs: where the quick start moves its VM
    load = {n: 0 for n in cluster_config.NODE_NAMES}
    for nodes in story.where().values():
        for n in nodes:
            load[n] += 1
    to_node = min(sorted(load), key=load.get)
    env = {"CEPH_USER": lab.ceph_user, "POOL": lab.pool, "VM": VM, "VM_XML": xml,
           "TO_NODE": to_node}
    assert set(env) == set(quickstart.variables(text))

    strategy = property_value(lab, "placement-strategy")
    t0 = time.monotonic()
    try:
        lab.run(1, ["crm_attribute", "--type", "crm_config", "--name", "placement-strategy",
                    "--update", "default"], timeout=60)
        lab.run(1, ["pcs", "resource", "delete", PRIMITIVE], timeout=180)
        assert not cib_xpath(lab, f"//clone[@id='{CLONE}']")
        lab.run(1, ["cibadmin", "--create", "-o", "constraints", "--xml-text",
                    f"<rsc_location id='{AWAY}' rsc-pattern='^{VM}$' node='{to_node}' "
                    "score='-1000'/>"], timeout=60)
        out = lab.run(1, ["bash", "-eu", "-c", text], env=env, timeout=300)
        print(f"README quick start in {lab.node_name(1)}, with {env}:\n{out.stdout}{out.stderr}")

        # the clone's meta on the clone: what keeps CephHealth running on a red node
        clone = cib_xpath(lab, f"//resources/clone[@id='{CLONE}']")
        assert len(clone) == 1, "the quick start created no clone " + CLONE
        prim = clone[0].find(f"primitive[@id='{PRIMITIVE}']")
        assert prim is not None and prim.get("type") == "CephHealth"
        assert meta(clone[0]).get("allow-unhealthy-nodes") == "true", ET.tostring(clone[0])
        assert meta(clone[0]).get("interleave") == "true", ET.tostring(clone[0])
        assert not {"allow-unhealthy-nodes", "interleave"} & set(meta(prim)), \
            "meta attributes on the primitive, not the clone: " + ET.tostring(clone[0]).decode()
        vm = cib_xpath(lab, f"//resources/primitive[@id='{VM}']")
        assert len(vm) == 1 and vm[0].get("type") == "RBDVirtualDomain"
        assert meta(vm[0]).get("allow-migrate") == "true"

        wait_until(lambda: runs_on(lab, VM) == [to_node], timeout=240, interval=1,
                   what=f"{VM} to run on {to_node} only")
        story.settle(timeout=180)
        assert runs_on(lab, VM) == [to_node]
        assert story.domstate(story.index(to_node), VM) == "running"
        # crm_mon lists an anonymous clone's instances under the primitive's id
        assert sorted(runs_on(lab, PRIMITIVE)) == sorted(cluster_config.NODE_NAMES)
        wait_until(lambda: all(cluster_config.health(lab).get(n) == "green"
                               for n in cluster_config.NODE_NAMES),
                   timeout=120, interval=1, what="#health-ceph green on every node")
        figure("README quick start: VM running on the target (s)",
               round(time.monotonic() - t0, 1))
    finally:
        _undo(lab, cfg, story, saved_clone[0], saved_orders, strategy)


def property_value(lab, name):
    p = lab.run(1, ["crm_attribute", "--type", "crm_config", "--name", name, "--query",
                    "--quiet"], timeout=30, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def _undo(lab, cfg, story, clone, orders, strategy):
    """Remove what the quick start created; put the session's health clone back."""
    if cib_xpath(lab, f"//resources/primitive[@id='{VM}']"):
        # the lab's guests have no OS and ignore ACPI shutdown: a normal stop would wait
        # 60 s before destroying. Unmanaged, destroyed, then deleted without a stop.
        lab.run(1, ["pcs", "resource", "unmanage", VM], timeout=60)
        for i in lab.indexes:
            if lab.alive(i) and story.domstate(i, VM) != "absent":
                lab.virsh(i, "destroy", VM)
        lab.run(1, ["pcs", "resource", "delete", VM, "--force"], timeout=120)
        lab.run(1, ["crm_resource", "--cleanup", "--resource", VM], timeout=60, check=False)
    lab.run(1, ["cibadmin", "--delete", "-o", "constraints", "--xml-text",
                f"<rsc_location id='{AWAY}'/>"], timeout=60, check=False)
    if cib_xpath(lab, f"//resources/clone[@id='{CLONE}']"):
        lab.run(1, ["pcs", "resource", "delete", PRIMITIVE], timeout=180)
    lab.run(1, ["cibadmin", "--create", "-o", "resources", "--xml-text",
                ET.tostring(clone).decode()], timeout=60)
    for order in orders:
        lab.run(1, ["cibadmin", "--create", "-o", "constraints", "--xml-text",
                    ET.tostring(order).decode()], timeout=60)
    wait_until(lambda: lab.run(1, ["rbd", "status", f"{lab.pool}/{IMAGE}"],
                               timeout=30).stdout.count("watcher=") == 0,
               timeout=60, interval=1, what=f"no watcher on {IMAGE}")
    lab.rbd_remove(IMAGE)
    if strategy is None:
        lab.run(1, ["crm_attribute", "--type", "crm_config", "--name", "placement-strategy",
                    "--delete"], timeout=60)
    else:
        lab.run(1, ["crm_attribute", "--type", "crm_config", "--name", "placement-strategy",
                    "--update", strategy], timeout=60)
    cluster_config.wait_settled(lab, cfg, timeout=180)
