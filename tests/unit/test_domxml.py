"""Domain XML parsing (lib/vmceph/domxml.py) and ``vmceph disks``.

The config file is trusted only so far: hostile XML (entity bombs, external entities,
huge files) must be refused quickly with a one-line message, never parsed.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmceph import domxml
from vmceph.domxml import DomainXMLError, load_domain, parse_domain

import fakes

ROOT = Path(__file__).resolve().parents[2]

DISKS = """<domain type='kvm'>
  <name>web1</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='GiB'>4</memory>
  <vcpu placement='static'>4</vcpu>
  <devices>
    <!-- the root disk: guarded -->
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source protocol='rbd' name='rbd/web1-root'>
        <host name='10.252.0.1' port='6789'/>
        <host name='10.252.0.2' port='6789'/>
        <host name='mon3.example.com'/>
        <config file='/etc/ceph/ceph.conf'/>
      </source>
      <auth username='vmceph'><secret type='ceph' uuid='0b4f7a4e-3c1f-4c55-9d7e-1a2b3c4d5e6f'/></auth>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='vms/tenant-a/web1-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='lun'>
      <source protocol='rbd' name='rbd/web1-lun'/>
      <target dev='sda' bus='scsi'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/shared-data'/>
      <shareable/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/golden'/>
      <readonly/>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='network' device='cdrom'>
      <source protocol='rbd' name='isos/debian-12.iso'/>
      <target dev='hdc' bus='sata'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/base'>
        <snapshot name='gold'/>
      </source>
      <target dev='vde' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/base2@v1'/>
      <target dev='vdf' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/var/lib/libvirt/images/scratch.qcow2'/>
      <target dev='vdg' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='local-lvm' volume='swap'/>
      <target dev='vdh' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='iscsi' name='iqn.2013-07.com.example:iscsi-nopool/1'/>
      <target dev='vdi' bus='virtio'/>
    </disk>
    <interface type='network'><source network='default'/></interface>
  </devices>
</domain>
"""


@pytest.fixture(scope="module")
def dom():
    return parse_domain(DISKS.encode())


def _disk(dom, target):
    return next(d for d in dom.rbd_disks if d.target == target)


def test_name_uuid_type(dom):
    assert (dom.name, dom.uuid, dom.domain_type) == (
        "web1", "c7a5fdbd-edaf-9455-926a-d65c16db1809", "kvm")
    assert dom.vcpus == 4 and dom.memory_kib == 4 * 1024 * 1024
    assert dom.networks == ("default",) and dom.pools == ("local-lvm",)


def test_pool_image_and_hosts(dom):
    d = _disk(dom, "vda")
    assert (d.pool, d.namespace, d.image, d.snapshot) == ("rbd", None, "web1-root", None)
    assert d.spec == "rbd/web1-root"
    assert d.hosts == ("10.252.0.1:6789", "10.252.0.2:6789", "mon3.example.com")
    assert d.auth_user == "vmceph" and d.config_file == "/etc/ceph/ceph.conf"
    assert d.guarded


def test_namespace(dom):
    d = _disk(dom, "vdb")
    assert (d.pool, d.namespace, d.image) == ("vms", "tenant-a", "web1-data")
    assert d.spec == "vms/tenant-a/web1-data" and d.guarded


def test_guarded_and_unguarded_disks(dom):
    guarded = {d.target for d in dom.guarded_disks}
    assert guarded == {"vda", "vdb", "sda"}
    reasons = {d.target: (d.readonly, d.shareable, d.device, d.snapshot) for d in dom.rbd_disks}
    assert reasons["vdc"] == (False, True, "disk", None)            # shareable
    assert reasons["vdd"] == (True, False, "disk", None)            # read-only
    assert reasons["hdc"] == (False, False, "cdrom", None)          # cdrom
    assert reasons["vde"][3] == "gold"                              # <snapshot name=>
    assert reasons["vdf"][3] == "v1"                                # pool/img@snap


def test_snapshot_forms(dom):
    assert _disk(dom, "vde").spec == "rbd/base"
    d = _disk(dom, "vdf")
    assert (d.image, d.snapshot, d.spec) == ("base2", "v1", "rbd/base2")
    assert not d.guarded


def test_non_rbd_disks_reported_not_guarded(dom):
    # parse_domain does no I/O: a volume disk is kept for disks.resolve (test_disks.py)
    assert dom.other_disks == ("vdg", "vdh", "vdi")
    assert [(o.type, o.attr("pool")) for o in dom.others] == [
        ("file", None), ("volume", "local-lvm"), ("network", None)]
    assert len(dom.rbd_disks) == 8


def test_floppy_is_writable_and_guarded():
    d = parse_domain("<domain><name>f</name><devices><disk type='network' device='floppy'>"
                     "<source protocol='rbd' name='rbd/fd'/><target dev='fda'/></disk>"
                     "</devices></domain>")
    assert [x.target for x in d.guarded_disks] == ["fda"]


def test_as_json(dom):
    j = _disk(dom, "vdb").as_json()
    assert j["spec"] == "vms/tenant-a/web1-data" and j["guarded"] is True
    assert j["hosts"] == [] and j["snapshot"] is None
    json.dumps(j)


@pytest.mark.parametrize("unit,value,kib", [
    (None, "1048576", 1048576), ("KiB", "2048", 2048), ("k", "2048", 2048),
    ("b", "1073741824", 1048576), ("bytes", "2048", 2), ("KB", "1024", 1000),
    ("M", "512", 524288), ("MiB", "512", 524288), ("MB", "1000", 976562),
    ("G", "2", 2097152), ("GiB", "2", 2097152), ("GB", "1", 976562),
    ("T", "1", 1073741824), ("TiB", "1", 1073741824), ("TB", "1", 976562500)])
def test_memory_units(unit, value, kib):
    attr = " unit='%s'" % unit if unit else ""
    d = parse_domain("<domain><name>m</name><memory%s>%s</memory></domain>" % (attr, value))
    assert d.memory_kib == kib


@pytest.mark.parametrize("xml", ["<domain><name>m</name></domain>",
                                 "<domain><name>m</name><memory>lots</memory></domain>",
                                 "<domain><name>m</name><memory unit='MiB'> </memory></domain>"])
def test_memory_absent_or_unreadable(xml):
    assert parse_domain(xml).memory_kib is None


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("xml,message", [
    ("<domain type='kvm'><uuid>x</uuid></domain>", "has no <name>"),
    ("<domain><name>  </name></domain>", "has no <name>"),
    ("<network><name>default</name></network>", "root element <network>, expected <domain>"),
    ("<domain xmlns='urn:x'><name>a</name></domain>", "expected <domain>"),
    ("this is not XML", "not well-formed XML"),
    ("<domain><name>a</name>", "not well-formed XML"),
    ("<domain><name>&undefined;</name></domain>", "not well-formed XML"),
    ("", "is empty"),
    ("  \n\t ", "is empty"),
    ("<domain><name>a</name><devices><disk type='network' device='disk'>"
     "<source protocol='rbd' name='justanimage'/></disk></devices></domain>",
     "is not 'pool/image' or 'pool/namespace/image'"),
    ("<domain><name>a</name><devices><disk type='network' device='disk'>"
     "<source protocol='rbd' name='a/b/c/d'/></disk></devices></domain>",
     "is not 'pool/image'"),
    ("<domain><name>a</name><devices><disk type='network' device='disk'>"
     "<source protocol='rbd' name='rbd//img'/></disk></devices></domain>", "has an empty part"),
    ("<domain><name>a</name><devices><disk type='network' device='disk'>"
     "<source protocol='rbd' name='/img'/></disk></devices></domain>", "has an empty part"),
])
def test_bad_documents_refused(xml, message):
    with pytest.raises(DomainXMLError) as e:
        parse_domain(xml.encode())
    assert message in str(e.value)
    assert "\n" not in str(e.value)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE domain [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<domain><name>&lol9;</name><description>&lol9;&lol9;&lol9;</description></domain>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE domain [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<domain><name>&xxe;</name></domain>
"""

XXE_PARAMETER = """<?xml version="1.0"?>
<!DOCTYPE domain [ <!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext; ]>
<domain><name>x</name></domain>
"""

XXE_DTD = """<?xml version="1.0"?>
<!DOCTYPE domain SYSTEM "file:///etc/passwd">
<domain><name>x</name></domain>
"""


def test_billion_laughs_refused_fast():
    t0 = time.monotonic()
    with pytest.raises(DomainXMLError) as e:
        parse_domain(BILLION_LAUGHS.encode())
    assert time.monotonic() - t0 < 1.0
    assert "lol" * 100 not in str(e.value)


@pytest.mark.parametrize("doc", [XXE, XXE_PARAMETER, XXE_DTD],
                         ids=["entity", "parameter-entity", "external-dtd"])
def test_external_entities_refused_and_never_read(doc):
    passwd = Path("/etc/passwd").read_text()
    marker = passwd.splitlines()[0] if passwd else "root:x:0:0"
    with pytest.raises(DomainXMLError) as e:
        parse_domain(doc.encode())
    assert "DOCTYPE" in str(e.value) or "entity" in str(e.value).lower()
    assert marker not in str(e.value) and "root:" not in str(e.value)


def test_huge_string_refused_before_parsing():
    data = b"<domain><name>x</name><description>" + b"a" * domxml.MAX_BYTES + b"</description>"
    with pytest.raises(DomainXMLError, match="larger than %d bytes" % domxml.MAX_BYTES):
        parse_domain(data)


def test_huge_file_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "huge.xml"
    with open(path, "wb") as f:
        f.write(b"<domain><name>x</name>")
        f.truncate(64 * 1024 * 1024)                  # sparse: 64 MiB, nothing allocated
    with pytest.raises(DomainXMLError, match="larger than"):
        load_domain(str(path))


def test_file_errors(tmp_path):
    with pytest.raises(DomainXMLError, match="does not exist"):
        load_domain(str(tmp_path / "nope.xml"))
    with pytest.raises(DomainXMLError, match="not a regular file"):
        load_domain(str(tmp_path))
    fifo = tmp_path / "fifo.xml"
    os.mkfifo(fifo)                     # opening it would block forever
    with pytest.raises(DomainXMLError, match="not a regular file"):
        load_domain(str(fifo))


def test_file_at_the_size_limit_is_parsed(tmp_path):
    head = b"<domain><name>big</name><description>"
    tail = b"</description></domain>"
    path = tmp_path / "limit.xml"
    path.write_bytes(head + b"x" * (domxml.MAX_BYTES - len(head) - len(tail)) + tail)
    assert load_domain(str(path)).name == "big"


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.xml"
    path.write_text("<domain><name>x</name></domain>")

    def denied(*a, **k):          # root reads every file: produce EACCES as a user sees it
        raise PermissionError(13, "Permission denied", str(path))
    from vmceph import domident    # reads the file for domxml (the probe's light path)
    monkeypatch.setattr(domident, "open", denied, raising=False)
    with pytest.raises(DomainXMLError, match="is not readable"):
        load_domain(str(path))


def test_comments_and_processing_instructions_are_harmless():
    d = parse_domain(b"<?xml version='1.0'?><!-- c --><domain><?pi x?><name>a<!-- c -->b"
                     b"</name></domain>")
    assert d.name == "ab"


# ----------------------------------------------------------------------------- vmceph disks

def _vmceph(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    return subprocess.run([sys.executable, "-m", "vmceph"] + list(args), capture_output=True,
                          text=True, env=env, timeout=60)


def test_vmceph_disks_json_schema(tmp_path):
    path = tmp_path / "web1.xml"
    path.write_text(DISKS)
    # vdh is a volume of a pool libvirt is not asked about: declared unguarded, or refused
    r = _vmceph("disks", str(path), "--json", "--no-libvirt", "--unguarded", "vdh",
                "--ceph-conf", "/etc/ceph/ceph.conf")
    # a host whose /etc/ceph/ceph.conf has other monitors refuses vda's (test_disks.py)
    assert r.returncode == 0 or "not a monitor of ceph_conf" in r.stderr, r.stderr
    every = json.loads(r.stdout)
    out = [d for d in every if d["spec"]]
    assert isinstance(every, list) and len(out) == 8 and len(every) == 11
    others = {d["target"]: d for d in every if not d["spec"]}
    assert {t: d["form"] for t, d in others.items()} == {"vdg": "other", "vdh": "other",
                                                          "vdi": "other"}
    assert "declared in unguarded_disks" in others["vdh"]["why_unguarded"]
    assert others["vdg"]["why_unguarded"] == "local file"
    for d in out:
        assert d["form"] == "network" and d["resolved_by"]
        assert {"target", "pool", "namespace", "image", "snapshot", "guarded"} <= set(d)
        assert isinstance(d["guarded"], bool)
        assert d["snapshot"] is None or isinstance(d["snapshot"], str)
        assert d["namespace"] is None or isinstance(d["namespace"], str)
    by = {d["target"]: d for d in out}
    assert by["vda"] == dict(by["vda"], pool="rbd", namespace=None, image="web1-root",
                             snapshot=None, guarded=True)
    assert (by["vdb"]["namespace"], by["vdb"]["guarded"]) == ("tenant-a", True)
    assert (by["vde"]["snapshot"], by["vde"]["guarded"]) == ("gold", False)
    assert (by["vdf"]["image"], by["vdf"]["snapshot"]) == ("base2", "v1")
    assert by["vdd"]["guarded"] is False and by["hdc"]["guarded"] is False


def test_vmceph_disks_text(tmp_path):
    path = tmp_path / "vm1.xml"
    path.write_text(fakes.domain_xml())
    r = _vmceph("disks", str(path), "--no-libvirt")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("domain vm1 (uuid 8a5b3c2d-") and "3 RBD disk(s)" in lines[0]
    assert any("rbd/tenant1/vm1-data" in line and "guarded" in line for line in lines)
    assert any("rbd/golden-iso" in line and "not guarded (read-only)" in line for line in lines)


@pytest.mark.parametrize("content", [BILLION_LAUGHS, XXE, "<domain><name>x</name>", "",
                                     "<domain><devices/></domain>"])
def test_vmceph_disks_hostile_file(tmp_path, content):
    path = tmp_path / "hostile.xml"
    path.write_text(content)
    r = _vmceph("disks", str(path), "--json")
    assert r.returncode != 0
    assert r.stdout == ""
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("vmceph: domain configuration %s" % path)
    assert "Traceback" not in r.stderr and "root:" not in r.stderr


def test_vmceph_disks_missing_file(tmp_path):
    r = _vmceph("disks", str(tmp_path / "absent.xml"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
