"""Hardened parsing of libvirt domain XML: name, UUID and the RBD disks.

The file comes from the resource's ``config`` parameter, so it is trusted only so far:
the parser resolves no entities, loads no DTD, touches no network, refuses any DOCTYPE
(libvirt never writes one; a DOCTYPE is where entity bombs and external entities live)
and refuses files larger than MAX_BYTES. Errors are ``DomainXMLError`` with a message an
administrator can act on.

RBD disks in libvirt (formatdomain.html, "disk" / "source"):
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/image'>      (or 'pool/namespace/image')
        <host name='10.0.0.1' port='6789'/>
        <snapshot name='snap'/>                       (optional: a read-only snapshot)
        <config file='/etc/ceph/ceph.conf'/>          (optional)
      </source>
      <auth username='vmceph'><secret type='ceph' uuid='...'/></auth>
      <readonly/> | <shareable/>                      (optional)
      <target dev='vda' bus='virtio'/>
    </disk>
A disk is *guarded* (exactly one writer allowed) unless it is read-only, shareable, a
snapshot, or a cdrom (read-only by nature); disk, lun and floppy devices are writable.

Every other disk is kept as an ``OtherDisk`` with its source attributes: a storage-pool
volume (``type='volume'``) or a block device (``type='block'``, e.g. a krbd ``/dev/rbd0``)
may still be an RBD image. Telling that needs libvirt and /sys, so it is not done here
(this module does no I/O beyond reading the file): ``vmceph.disks.resolve`` does it and
returns the Domain with every RBD disk it found among the guarded ones (docs/disks.md).
"""

WRITABLE_DEVICES = ("disk", "lun", "floppy")

from typing import NamedTuple, Optional, Tuple

# the file's reading and the error live in the light vmceph.domident (the probe's path
# reads the name and UUID without this module's typing and lxml); re-exported here
from vmceph.domident import MAX_BYTES, DomainXMLError, read_domain_file  # noqa: F401


class RBDDisk(NamedTuple):
    target: Optional[str]
    pool: str
    namespace: Optional[str]
    image: str
    snapshot: Optional[str]
    device: str
    readonly: bool
    shareable: bool
    hosts: Tuple[str, ...]
    auth_user: Optional[str]
    config_file: Optional[str]
    # how the image was found: 'network' (<source protocol='rbd'>), 'volume' (a libvirt
    # RBD storage pool) or 'krbd' (a block device the kernel maps), and from what
    form: str = "network"
    resolved_by: str = "domain XML <source protocol='rbd'>"
    # krbd only: this node's kernel client that maps the image ("client.4235"); it is the
    # domain's own path to the image, not a second writer
    krbd_client: Optional[str] = None
    cluster_fsid: Optional[str] = None    # krbd only: the fsid the kernel client maps from

    @property
    def guarded(self) -> bool:
        return not (self.readonly or self.shareable or self.snapshot
                    or self.device not in WRITABLE_DEVICES)

    @property
    def spec(self) -> str:
        """'pool/image' or 'pool/namespace/image' (the form ``rbd`` commands take)."""
        if self.namespace:
            return "%s/%s/%s" % (self.pool, self.namespace, self.image)
        return "%s/%s" % (self.pool, self.image)

    def as_json(self):
        d = self._asdict()
        d["hosts"] = list(self.hosts)
        d["guarded"] = self.guarded
        d["spec"] = self.spec
        return d


class OtherDisk(NamedTuple):
    """A disk that is not a network RBD disk, with what ``disks.resolve`` needs to tell
    whether it is one after all."""
    target: Optional[str]
    type: str                             # 'file', 'block', 'volume', 'network', 'dir', ...
    device: str
    readonly: bool
    shareable: bool
    source: Tuple[Tuple[str, str], ...]   # the <source> element's attributes

    @property
    def writable(self) -> bool:
        return not (self.readonly or self.shareable) and self.device in WRITABLE_DEVICES

    def attr(self, name):
        return dict(self.source).get(name)


class Domain(NamedTuple):
    name: str
    uuid: Optional[str]
    domain_type: Optional[str]
    rbd_disks: Tuple[RBDDisk, ...]
    other_disks: Tuple[str, ...]          # targets of non-RBD disks (reported, not guarded)
    memory_kib: Optional[int]
    vcpus: Optional[int]
    networks: Tuple[str, ...]             # libvirt networks used by interfaces
    pools: Tuple[str, ...]                # libvirt storage pools used by volume disks
    others: Tuple[OtherDisk, ...] = ()    # the disks behind other_disks, in the same order
    # set by disks.resolve: [(OtherDisk, why it is not guarded)] for the report
    unguarded: Tuple[Tuple[OtherDisk, str], ...] = ()

    @property
    def guarded_disks(self):
        return tuple(d for d in self.rbd_disks if d.guarded)


def _parser():
    from lxml import etree
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True)


def parse_domain(data: bytes, source="domain XML") -> Domain:
    from lxml import etree
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise DomainXMLError("%s is larger than %d bytes: refusing to parse" % (source, MAX_BYTES))
    if not data.strip():
        raise DomainXMLError("%s is empty" % source)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise DomainXMLError("%s is not well-formed XML: %s" % (source, e)) from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise DomainXMLError("%s contains a DOCTYPE (entity declarations): libvirt domain XML "
                             "never has one; refusing it" % source)
    for e in root.iter():
        if not isinstance(e.tag, str):  # an unresolved entity reference or a PI
            if isinstance(e, etree._Entity):
                raise DomainXMLError("%s uses an XML entity (&%s;): refusing it"
                                     % (source, e.name))
    if root.tag != "domain":
        raise DomainXMLError("%s is not a libvirt domain (root element <%s>, expected <domain>)"
                             % (source, root.tag))
    name = (root.findtext("name") or "").strip()
    if not name:
        raise DomainXMLError("%s has no <name>" % source)
    uuid = (root.findtext("uuid") or "").strip() or None
    disks, others, pools = [], [], []
    for disk in root.iterfind("devices/disk"):
        d = _rbd_disk(disk, source)
        if d is not None:
            disks.append(d)
        else:
            o = _other_disk(disk)
            others.append(o)
            if o.type == "volume" and o.attr("pool"):
                pools.append(o.attr("pool"))
    nets = tuple(s.get("network") for s in root.iterfind("devices/interface/source")
                 if s.get("network"))
    return Domain(name=name, uuid=uuid, domain_type=root.get("type"), rbd_disks=tuple(disks),
                  other_disks=tuple(o.target or "?" for o in others),
                  memory_kib=_memory_kib(root), vcpus=_vcpus(root),
                  networks=nets, pools=tuple(pools), others=tuple(others))


def load_domain(path) -> Domain:
    return parse_domain(read_domain_file(path), source="domain configuration %s" % path)


def _other_disk(disk):
    t = disk.find("target")
    src = disk.find("source")
    return OtherDisk(target=t.get("dev") if t is not None and t.get("dev") else None,
                     type=disk.get("type") or "file", device=disk.get("device") or "disk",
                     readonly=disk.find("readonly") is not None,
                     shareable=disk.find("shareable") is not None,
                     source=tuple(sorted(src.attrib.items())) if src is not None else ())


def _rbd_disk(disk, source):
    src = disk.find("source")
    if src is None or src.get("protocol") != "rbd" or disk.get("type") != "network":
        return None
    name = (src.get("name") or "").strip()
    snapshot = None
    if "@" in name:  # qemu-style 'pool/image@snap'
        name, snapshot = name.split("@", 1)
    snap_el = src.find("snapshot")
    if snap_el is not None and snap_el.get("name"):
        snapshot = snap_el.get("name")
    parts = name.split("/")
    if len(parts) == 2:
        pool, ns, image = parts[0], None, parts[1]
    elif len(parts) == 3:
        pool, ns, image = parts
    else:
        raise DomainXMLError("%s: RBD disk source name %r is not 'pool/image' or "
                             "'pool/namespace/image'" % (source, src.get("name")))
    if not pool or not image or (ns is not None and not ns):
        raise DomainXMLError("%s: RBD disk source name %r has an empty part"
                             % (source, src.get("name")))
    hosts = []
    for h in src.iterfind("host"):
        if h.get("name"):
            hosts.append("%s:%s" % (h.get("name"), h.get("port")) if h.get("port")
                         else h.get("name"))
    auth = disk.find("auth")
    cfg = src.find("config")
    target = disk.find("target")
    return RBDDisk(
        target=target.get("dev") if target is not None else None,
        pool=pool, namespace=ns, image=image, snapshot=snapshot,
        device=disk.get("device") or "disk",
        readonly=disk.find("readonly") is not None,
        shareable=disk.find("shareable") is not None,
        hosts=tuple(hosts),
        auth_user=auth.get("username") if auth is not None else None,
        config_file=cfg.get("file") if cfg is not None else None,
    )


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
          "m": 1024, "mib": 1024, "mb": 1000 ** 2 / 1024, "g": 1024 ** 2, "gib": 1024 ** 2,
          "gb": 1000 ** 3 / 1024, "t": 1024 ** 3, "tib": 1024 ** 3, "tb": 1000 ** 4 / 1024}


def _memory_kib(root):
    e = root.find("memory")
    if e is None or not (e.text or "").strip():
        return None
    n = _int(e.text)
    if n is None:
        return None
    scale = _UNITS.get((e.get("unit") or "KiB").lower(), 1)
    return int(n * scale)


def _vcpus(root):
    """The vCPUs the guest starts with: <vcpu current='N'>MAX</vcpu> boots N of MAX
    (the rest can be hot-plugged), what `virsh dominfo` shows as CPU(s)."""
    v = root.find("vcpu")
    if v is None:
        return None
    current = _int(v.get("current"))
    return current if current else _int(v.text)


def _int(text):
    try:
        return int((text or "").strip())
    except ValueError:
        return None
