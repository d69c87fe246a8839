"""The probe's cheap reading of a domain's name and UUID (lib/vmceph/domident.py).

Oracle: domxml.parse_domain (the full, hardened parser) is what decides a domain's name and
UUID; the cheap reader must either agree with it or refuse to answer (None), never give
another name, because the probe then answers "not running" about the name it looked up.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmceph import ocf
from vmceph.domident import name_and_uuid
from vmceph.domxml import DomainXMLError, parse_domain
from vmceph.rbdvd import RBDVirtualDomain

UUID = "6695eb01-f6a4-8304-79aa-97f2502e1930"

PLAIN = [
    "<domain type='kvm'><name>vm1</name><uuid>%s</uuid></domain>" % UUID,
    "<?xml version='1.0' encoding='UTF-8'?>\n<!-- virsh edit vm1 -->\n<domain type='kvm'>\n"
    "  <name>\n   vm1 \n</name>\n  <devices><disk><name>not-me</name></disk></devices>\n"
    "</domain>",
    "<domain><description><name>inner</name></description><name>vm1</name></domain>",
    "<domain><name>vm&amp;1</name><uuid> %s </uuid></domain>" % UUID.upper(),
    "<domain><name>v&#109;1</name></domain>",
    "<domain><name>vm1</name><name>second</name></domain>",
    "<domain><uuid>%s</uuid><!-- c --><?pi x?><name>vm1</name></domain>" % UUID,
]

UNSURE = [
    # entities and DTDs: refused by domxml, never read here
    "<!DOCTYPE domain [<!ENTITY n 'vm1'>]><domain><name>&n;</name></domain>",
    "<!DOCTYPE domain SYSTEM 'http://example.com/x.dtd'><domain><name>vm1</name></domain>",
    "<domain><name>&undefined;</name></domain>",
    # namespaces: lxml sees {uri}domain, {uri}name
    "<domain xmlns='http://libvirt.org/schemas/domain'><name>vm1</name></domain>",
    "<domain><name xmlns='urn:x'>vm1</name></domain>",
    "<d:domain xmlns:d='urn:x'><d:name>vm1</d:name></d:domain>",
    # what findtext would read only part of
    "<domain><name>vm<b>1</b></name></domain>",
    "<domain><name>vm<!-- c -->1</name></domain>",
    "<domain><name>vm<?pi x?>1</name></domain>",
    "<domain><name><![CDATA[vm1]]></name></domain>",
    # no name, wrong root, not XML, empty
    "<domain><uuid>%s</uuid></domain>" % UUID,
    "<domain><name>  </name></domain>",
    "<domain><name/><name>vm1</name></domain>",
    "<domains><name>vm1</name></domains>",
    "<domain><name>vm1</name>",
    "<domain><name>vm1</name></domain><domain/>",
    "",
    "   \n",
    "not xml",
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_documents_read_as_the_full_parser_reads_them(text):
    dom = parse_domain(text.encode())
    assert name_and_uuid(text.encode()) == (dom.name, dom.uuid)
    assert name_and_uuid(text) == (dom.name, dom.uuid)


@pytest.mark.parametrize("text", UNSURE)
def test_anything_else_is_left_to_the_full_parser(text):
    assert name_and_uuid(text.encode()) is None


def test_never_a_name_the_full_parser_would_not_give():
    """Every document of both lists: the cheap answer is the full parser's, or none."""
    for text in PLAIN + UNSURE:
        cheap = name_and_uuid(text.encode())
        try:
            dom = parse_domain(text.encode())
            full = (dom.name, dom.uuid)
        except DomainXMLError:
            full = None
        assert cheap is None or cheap == full, text


def test_latin1_and_utf16_documents():
    text = "<?xml version='1.0' encoding='ISO-8859-1'?><domain><name>v\xe9</name></domain>"
    assert name_and_uuid(text.encode("latin-1")) == ("v\xe9", None)
    assert name_and_uuid("<domain><name>vm1</name></domain>".encode("utf-16")) == ("vm1", None)


def test_a_huge_document_is_not_read():
    from vmceph.domident import MAX_BYTES
    big = b"<domain><name>vm1</name><description>" + b"a" * MAX_BYTES + b"</description></domain>"
    assert name_and_uuid(big) is None


def _probe(tmp_path, xml, hypervisor="test:///default"):
    config = tmp_path / "vm1.xml"
    config.write_text(xml)
    env = {"OCF_RESOURCE_INSTANCE": "vm1", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_config": str(config), "OCF_RESKEY_hypervisor": hypervisor}
    err = io.StringIO()
    rc = ocf.run(RBDVirtualDomain(), ["RBDVirtualDomain", "monitor"], env, io.StringIO(), err)
    return rc, err.getvalue()


def test_probe_finds_a_running_domain_by_the_cheap_name(tmp_path):
    """libvirt's test driver runs a domain named 'test': a probe of a config naming it
    answers running, whether the name was read cheaply or in full."""
    pytest.importorskip("libvirt")
    cheap = "<domain type='test'><name>test</name></domain>"
    full = "<domain xmlns:x='urn:x' type='test'><name>test</name></domain>"
    assert name_and_uuid(cheap.encode()) is not None
    assert name_and_uuid(full.encode()) is None
    assert _probe(tmp_path, cheap)[0] == ocf.OCF_SUCCESS
    assert _probe(tmp_path, full)[0] == ocf.OCF_SUCCESS


def test_probe_of_an_unknown_domain_is_not_running(tmp_path):
    pytest.importorskip("libvirt")
    rc, _ = _probe(tmp_path, "<domain type='test'><name>absent</name><uuid>%s</uuid></domain>"
                   % UUID)
    assert rc == ocf.OCF_NOT_RUNNING


PROBE = """
import io, json, sys
sys.path.append("/usr/lib/python3/dist-packages")   # as the agent, run with -S, does
from vmceph import ocf
from vmceph.rbdvd import RBDVirtualDomain
env = json.loads(sys.argv[1])
rc = ocf.run(RBDVirtualDomain(), ["RBDVirtualDomain", "monitor"], env, io.StringIO(),
             io.StringIO())
print(json.dumps({"rc": rc, "loaded": sorted(m for m in ("rados", "rbd", "lxml", "lxml.etree",
    "typing", "inspect", "vmceph.domxml", "vmceph.ceph", "vmceph.safety", "libvirt",
    "subprocess") if m in sys.modules)}))
"""


@pytest.mark.parametrize("name,rc", [("absent", ocf.OCF_NOT_RUNNING), ("test", ocf.OCF_SUCCESS)])
def test_probe_imports_no_lxml_typing_or_ceph(tmp_path, name, rc):
    """The probe (monitor, interval 0) of a domain with no remembered identity reads its
    name without lxml, domxml's typing or the libvirt wrapper: run in a fresh interpreter
    against libvirt's in-process test driver."""
    pytest.importorskip("libvirt")
    config = tmp_path / "vm1.xml"
    config.write_text("<domain type='test'><name>%s</name><uuid>%s</uuid></domain>"
                      % (name, UUID if name == "absent" else
                         "6695eb01-f6a4-8304-79aa-97f2502e193f"))
    env = {"OCF_RESOURCE_INSTANCE": "vm1", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_config": str(config), "OCF_RESKEY_hypervisor": "test:///default"}
    lib = str(Path(__file__).resolve().parents[2] / "lib")
    r = subprocess.run([sys.executable, "-S", "-c", PROBE, json.dumps(env)], capture_output=True,
                       text=True, timeout=60, env={"PYTHONPATH": lib, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"rc": rc, "loaded": []}
