"""vmlab configure with more VMs than the example's three (issue 15, item 2: the mass-failover
lab runs eleven): each extra VM is the example's vm2 as written into the CIB, renamed, with
its constraints; test placements are INFINITY preferences released again by id."""

import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from vmlab.cluster_config import add_preferences, add_vm_copies, release_preferences  # noqa: E402

EXAMPLE = TESTS.parent / "cib-examples" / "cluster.xml"


@pytest.fixture
def cib(tmp_path):
    path = tmp_path / "work.xml"
    shutil.copy(EXAMPLE, path)
    return str(path)


def _constraints(root, vm):
    return [c for c in root.find("configuration/constraints")
            if vm in (c.get("rsc"), c.get("then"))]


def test_an_extra_vm_is_the_example_vm2_renamed_with_its_constraints(cib):
    assert add_vm_copies(cib, ["vm1", "vm4", "vm12"]) == ["vm4", "vm12"]   # vm1 exists
    root = ET.parse(cib).getroot()
    prims = {p.get("id"): p for p in root.iter("primitive")}
    for vm in ("vm4", "vm12"):
        prim = prims[vm]
        assert prim.get("type") == "RBDVirtualDomain"
        params = {nv.get("name"): nv.get("value")
                  for nv in prim.iterfind("instance_attributes/nvpair")}
        assert params["config"] == f"/etc/vmceph/domains/{vm}.xml"
        assert params["ceph_user"] == "vmceph"
        ops = {(o.get("name"), o.get("interval")) for o in prim.iterfind("operations/op")}
        assert ("start", "0s") in ops and ("monitor", "300s") in ops
        kinds = sorted(c.tag for c in _constraints(root, vm))
        assert kinds == ["rsc_location", "rsc_location", "rsc_order"], kinds
    # every id stays unique (the CIB refuses duplicates), and vm2 is untouched
    ids = [el.get("id") for el in root.iter() if el.get("id")]
    assert len(ids) == len(set(ids))
    assert prims["vm2"].find("instance_attributes/nvpair[@name='config']").get(
        "value") == "/etc/vmceph/domains/vm2.xml"


def test_preferences_are_infinity_locations_released_by_their_ids(cib):
    add_preferences(cib, {"vm1": "node3", "vm2": "node2"})
    root = ET.parse(cib).getroot()
    locs = {c.get("id"): c for c in root.iter("rsc_location") if c.get("score") == "INFINITY"}
    assert locs["location-vm1-node3-INFINITY"].get("node") == "node3"
    assert locs["location-vm2-node2-INFINITY"].get("rsc") == "vm2"

    class Lab:
        ran = []

        def first_alive(self):
            return 1

        def run(self, i, argv, timeout):
            self.ran.append(argv)
    release_preferences(Lab(), {"vm1": "node3", "vm2": "node2"})
    assert Lab.ran == [["pcs", "constraint", "delete", "location-vm1-node3-INFINITY",
                        "location-vm2-node2-INFINITY"]]
