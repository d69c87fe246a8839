"""CephHealth's permanent address attribute (issue 10, item 5): kept at stop, and written
whenever the CIB's value differs from this node's addresses (compared with the CIB, not a
local cache). crm_attribute is a stateful stub here: it keeps the value in a file, as the
CIB keeps it, and answers -G -q with it (rc 6 when absent, as crm_attribute 2.1.5 does)."""

import pytest

from test_cephhealth import Node

CRM_ATTRIBUTE = r'''
store="%s"
name="" value="" op=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) name="$2"; shift;;
    -v) op=set; value="$2"; shift;;
    -G) op=get;;
    -D) op=del;;
  esac
  shift
done
case "$op" in
  set) printf '%%s' "$value" > "$store.$name";;
  get) [ -f "$store.$name" ] || exit 6; cat "$store.$name"; echo;;
  del) rm -f "$store.$name";;
esac
'''


@pytest.fixture
def node(tmp_path, monkeypatch):
    n = Node(tmp_path, monkeypatch)
    n.store = tmp_path / "cib"
    n.bin.add("crm_attribute", CRM_ATTRIBUTE % n.store)
    yield n
    n.ceph.close()


def cib(node, name="vmceph-ceph-addrs"):
    p = node.store.parent / ("cib." + name)
    return p.read_text() if p.exists() else None


def sets(node):
    return [c for c in node.crm_attribute() if "-v" in c]


def test_stop_keeps_the_address_attribute(node):
    assert node.run("start") == 0
    assert cib(node) == "10.252.0.1"
    assert node.run("stop") == 0
    assert cib(node) == "10.252.0.1"
    assert not [c for c in node.crm_attribute() if "-D" in c]


def test_written_only_when_the_cib_differs(node):
    assert node.run("start") == 0
    assert node.run("monitor", interval=10000) == 0
    assert node.run("monitor", interval=10000) == 0
    assert len(sets(node)) == 1
    # someone removed it from the CIB: a local cache would never notice
    (node.store.parent / "cib.vmceph-ceph-addrs").unlink()
    assert node.run("monitor", interval=10000) == 0
    assert cib(node) == "10.252.0.1" and len(sets(node)) == 2
    # a wrong value in the CIB is corrected
    (node.store.parent / "cib.vmceph-ceph-addrs").write_text("10.9.9.9")
    assert node.run("monitor", interval=10000) == 0
    assert cib(node) == "10.252.0.1" and len(sets(node)) == 3


def test_restart_of_the_clone_keeps_the_node_mapped(node):
    assert node.run("start") == 0
    assert node.run("stop") == 0
    assert cib(node) == "10.252.0.1"           # mapped while stopped
    assert node.run("start") == 0
    assert len(sets(node)) == 1                # and not rewritten on the restart
