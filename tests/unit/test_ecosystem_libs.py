"""Library calls instead of hand-written protocol (issue 13):

- blocklist entries through python3-rados' ``Rados.blocklist_add`` (not a hand-built monitor
  JSON command), bounded like every other Ceph call, its errors translated;
- ``attrd_updater -Q --output-as=xml`` read with an XML parser (not scraped text, which cut
  a value at its first space);
- the monitor's private ``libvirtmod`` path (kept for the depth-0 import cost) run against
  the installed binding and compared with the public ``libvirt`` module.

The real behaviour of the first two is shown against the lab in
tests/integration/test_ecosystem_libs.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import fakes
from test_cluster import _cluster, _result
from vmceph.ceph import CephPermission, CephSession, CephUnavailable
from vmceph.cluster import parse_attrd_query
from vmceph.ocf import Deadline

ROOT = Path(__file__).resolve().parents[2]
ADDR = "10.252.0.2:0/3154213287"


# ----------------------------------------------------------------------------- blocklist

@pytest.fixture
def cluster():
    c = fakes.FakeCeph()
    yield c
    c.close()


@pytest.fixture
def conf(tmp_path):
    p = tmp_path / "ceph.conf"
    p.write_text("[global]\nmon_host = 10.252.0.1\n")
    return str(p)


def session(cluster, conf, deadline=None):
    return CephSession(conf, "vmceph", None, deadline or Deadline(90),
                       rados_mod=cluster.rados, rbd_mod=cluster.rbd)


def test_real_binding_has_blocklist_add_with_integer_seconds():
    rados = pytest.importorskip("rados")
    doc = rados.Rados.blocklist_add.__doc__ or ""
    # python3-rados 16.2.15: 'Rados.blocklist_add(self, unicode client_address: str,
    # expire_seconds: int = 0)'; 0 means the monitors' default expiry (an hour)
    assert "expire_seconds: int" in doc, doc


def test_blocklist_goes_through_the_binding(cluster, conf, monkeypatch):
    calls = []
    real = fakes.Rados.blocklist_add

    def spy(self, client_address, expire_seconds=0):
        calls.append((client_address, expire_seconds))
        return real(self, client_address, expire_seconds)
    monkeypatch.setattr(fakes.Rados, "blocklist_add", spy)
    with session(cluster, conf) as s:
        s.blocklist_add(ADDR, 600)
    assert calls == [(ADDR, 600)]
    # what librados sends: no 'format' (our own mon() adds one)
    assert cluster.commands[-1] == {"prefix": "osd blocklist", "blocklistop": "add",
                                    "addr": ADDR, "expire": 600.0}
    assert cluster.is_blocklisted(ADDR)


@pytest.mark.parametrize("given,sent", [(600, 600), (600.0, 600), (0.2, 1), (0, 1),
                                        (90.5, 91)])
def test_expiry_is_whole_seconds_and_never_the_default(cluster, conf, given, sent):
    """The binding takes a C int (a float is a TypeError) and 0 means an hour: a short
    expiry rounds up, never to 0."""
    with session(cluster, conf) as s:
        s.blocklist_add(ADDR, given)
    assert cluster.commands[-1]["expire"] == float(sent)


def test_blocklist_errors_are_translated(cluster, conf):
    cluster.caps = "none"
    with session(cluster, conf) as s:
        with pytest.raises(CephPermission, match="osd blocklist add"):
            s.blocklist_add(ADDR, 600)
    cluster.caps = "admin"
    with session(cluster, conf) as s:
        cluster.lose_quorum()
        with pytest.raises(CephUnavailable, match="timed out"):
            s.blocklist_add(ADDR, 600)
    assert cluster.blocklist == {}


def test_blocklist_call_is_bounded_by_the_deadline(cluster, conf):
    with session(cluster, conf, Deadline(2.0, margin_s=0)) as s:
        cluster.hang_mon.set()
        with pytest.raises(CephUnavailable, match="did not answer 'osd blocklist add"):
            s.blocklist_add(ADDR, 600)
        assert s.abandoned          # the handle is left for the process's exit
    cluster.release.set()


def test_an_address_for_every_client_of_a_host_is_still_refused(cluster, conf):
    with session(cluster, conf) as s:
        for addr in ("10.252.0.2:0/0", "10.252.0.2"):
            with pytest.raises(ValueError, match="not one client instance"):
                s.blocklist_add(addr, 600)
    assert cluster.blocklist == {}


def test_fake_binding_refuses_what_the_real_one_refuses(cluster, conf):
    with session(cluster, conf) as s:
        with pytest.raises(TypeError):
            s.cluster.blocklist_add(ADDR, 60.0)
        with pytest.raises(fakes.real_rados.InvalidArgumentError):
            s.cluster.blocklist_add("not an address", 60)


# ----------------------------------------------------------------------------- attrd

# attrd_updater -n vmceph-ceph-addrs -Q --output-as=xml, Pacemaker 2.1.5 (three-node lab)
ATTRD_XML = """<pacemaker-result api-version="2.25" request="attrd_updater -n monitor-probe-x -Q --output-as=xml">
  <attribute name="monitor-probe-x" value="10.0.0.1 10.0.1.1" host="node1"/>
  <status code="0" message="OK"/>
</pacemaker-result>
"""


def test_attrd_xml_value_with_spaces():
    assert parse_attrd_query(ATTRD_XML, "monitor-probe-x") == "10.0.0.1 10.0.1.1"
    assert parse_attrd_query(ATTRD_XML, "monitor-probe-x", "node1") == "10.0.0.1 10.0.1.1"
    assert parse_attrd_query(ATTRD_XML, "other") is None
    assert parse_attrd_query(ATTRD_XML, "monitor-probe-x", "node2") is None


def test_attrd_xml_deleted_value_is_none():
    assert parse_attrd_query(ATTRD_XML.replace("10.0.0.1 10.0.1.1", ""),
                             "monitor-probe-x") is None


def test_attrd_xml_escaped_quotes_survive():
    xml = ATTRD_XML.replace("10.0.0.1 10.0.1.1", "a &quot;b&quot; c")
    assert parse_attrd_query(xml, "monitor-probe-x") == 'a "b" c'


def test_query_attribute_asks_for_xml_and_reads_the_whole_value():
    cl, runner = _cluster(lambda argv: _result(argv, out=ATTRD_XML))
    assert cl.query_attribute("monitor-probe-x", "node1") == "10.0.0.1 10.0.1.1"
    assert "--output-as=xml" in runner.call_args.args[0]


def test_query_attribute_unknown_attribute_is_none():
    # rc 78 with an XML error document (seen in the lab)
    out = ('<pacemaker-result api-version="2.25"><status code="78" message="Invalid '
           'configuration"><errors><error>attrd_updater: Could not query value of x: '
           'attribute does not exist</error></errors></status></pacemaker-result>')
    cl, _ = _cluster(lambda argv: _result(argv, rc=78, out=out))
    assert cl.query_attribute("x") is None
    cl, _ = _cluster(lambda argv: _result(argv, out="not xml"))
    assert cl.query_attribute("x") is None


# ----------------------------------------------------------------------------- libvirtmod

QUICK = """
import json, sys
from vmceph import virt
TEST_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"   # the test driver's domain 'test'
out = {}
out["by_uuid"] = virt.quick_state("test:///default", "test", TEST_UUID, 10.0)
out["by_name"] = virt.quick_state("test:///default", "test", None, 10.0)
out["wrong_uuid"] = virt.quick_state("test:///default", "test",
                                     "00000000-0000-0000-0000-000000000001", 10.0)
out["unknown"] = virt.quick_state("test:///default", "nosuch", None, 10.0)
try:
    virt.quick_state("qemu+unix:///system?socket=/nonexistent/libvirt-sock", "test", None, 10.0)
    out["unreachable"] = "answered"
except virt.VirtError as e:
    out["unreachable"] = type(e).__name__
out["private_only"] = "libvirt" not in sys.modules and "libvirtmod" in sys.modules
# the public module's answers for the same domain, and for a paused one
import libvirt
conn = libvirt.open("test:///default")
dom = conn.lookupByName("test")
out["public"] = dom.state()
dom.suspend()
del sys.modules["libvirt"]        # quick_state takes the private path again
out["paused"] = virt.quick_state("test:///default", "test", TEST_UUID, 10.0)
sys.modules["libvirt"] = libvirt
out["public_paused"] = dom.state()
print(json.dumps(out))
"""


def test_libvirtmod_path_against_the_installed_binding():
    """virt.quick_state's private path (libvirtmod, kept for the monitor's import cost)
    run against the installed libvirt-python and its in-process test driver: the same
    answers as the public module, errors classified from the real virGetLastError."""
    pytest.importorskip("libvirtmod")
    r = subprocess.run([sys.executable, "-c", QUICK], capture_output=True, text=True,
                       timeout=60, env={"PYTHONPATH": str(ROOT / "lib"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    from vmceph import virt
    assert out["private_only"] is True
    assert out["by_uuid"] == out["by_name"] == out["wrong_uuid"] == out["public"]
    assert out["by_uuid"][0] == virt.RUNNING
    assert out["unknown"] == [virt.SHUTOFF, 0]
    assert out["unreachable"] == "LibvirtUnreachable"
    assert out["paused"] == out["public_paused"] == [virt.PAUSED, virt.PAUSED_USER]
