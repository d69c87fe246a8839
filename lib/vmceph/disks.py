"""Every form of RBD disk a domain can have, resolved to the image it writes, and the
check that they all belong to the Ceph cluster of the resource (docs/disks.md).

``domxml.parse_domain`` finds the network disks (``<source protocol='rbd'>``) by itself.
Two more forms reach an RBD image and need this node to tell which one:

- ``<disk type='volume'><source pool='P' volume='V'/>``: a volume of the libvirt storage
  pool P. If P is an RBD pool (``<pool type='rbd'>``), libvirt turns the disk into a
  network disk on image V of the Ceph pool ``<source><name>`` of P, through the pool's
  ``<host>`` monitors and ``<auth>``. libvirt 9.0's pool schema (storagepool.rng,
  ``sourcerbd``) has no RBD namespace: a pool always names a whole Ceph pool.
- ``<disk type='block'><source dev='/dev/rbdN'/>`` or ``/dev/rbd/POOL/[NS/]IMAGE``: an
  image the kernel (krbd) maps. The udev link is resolved to ``/dev/rbdN``, and the kernel
  says what N maps in ``/sys/bus/rbd/devices/N/{pool,pool_ns,name,current_snap,
  client_id,cluster_fsid}`` (``current_snap`` is ``-`` for the image itself; a mapped
  snapshot is read-only). A device found only through its major number (a node of its
  own name) is resolved the same way through ``/sys/dev/block/MAJ:MIN``.

A writable disk that may be RBD and cannot be resolved is a problem (validate-all fails)
unless the administrator lists its target in ``unguarded_disks``. A disk that is clearly
not RBD (a local file, an LVM volume, a dir pool) is reported and not guarded.

The sysfs and /dev roots are parameters so that tests run on a fixture tree (this
project's CI kernel has no krbd). Nothing here is imported on the depth-0 monitor path.
"""

import ipaddress
import os
import re
from typing import NamedTuple, Optional, Tuple

from vmceph.domxml import RBDDisk

# kinds of problem, mapped to OCF codes by the agent (rbdvd._domain)
CONFIGURED = "configured"     # the configuration is wrong: OCF_ERR_CONFIGURED
INSTALLED = "installed"       # something is missing on this node: OCF_ERR_INSTALLED
UNAVAILABLE = "unavailable"   # libvirt could not be asked: OCF_ERR_GENERIC
WARNING = "warning"           # logged, not a failure

DEFAULT_CONF = "/etc/ceph/ceph.conf"
MON_DEFAULT_PORTS = (3300, 6789)       # msgr2, legacy: a monitor address without a port

_RBD_DEV = re.compile(r"^rbd(\d+)(?:p\d+)?$")     # rbd0, rbd0p1 (a partition of rbd0)


class Problem(NamedTuple):
    target: str
    kind: str
    reason: str


class DisksError(Exception):
    """One or more disks cannot be guarded; ``problems`` says which and why."""

    def __init__(self, problems):
        self.problems = tuple(problems)
        super().__init__("; ".join(p.reason for p in self.problems))

    @property
    def kind(self):
        kinds = {p.kind for p in self.problems}
        for k in (CONFIGURED, INSTALLED, UNAVAILABLE):
            if k in kinds:
                return k
        return CONFIGURED


class Resolution(NamedTuple):
    domain: object                          # domxml.Domain, every RBD disk in rbd_disks
    problems: Tuple[Problem, ...]           # disks that cannot be guarded nor ignored
    warnings: Tuple[str, ...] = ()


def parse_unguarded(text):
    """Targets from the unguarded_disks parameter ('vdb vdc' or 'vdb,vdc')."""
    return tuple(t for t in re.split(r"[\s,]+", text or "") if t)


# ----------------------------------------------------------------------------- resolution

def resolve(dom, hypervisor=None, unguarded=(), sys_root="/sys", dev_root="/dev"):
    """Resolution of every disk of ``dom`` (a domxml.Domain).

    ``hypervisor``: a virt.Hypervisor for the storage pools (None: volume disks cannot be
    resolved). ``unguarded``: targets the administrator declared unguarded."""
    declared = set(unguarded)
    krbd = Krbd(sys_root, dev_root)
    pools = {}
    rbd, others, skipped, problems, warnings = list(dom.rbd_disks), [], [], [], []
    for o in dom.others:
        target = o.target or "?"
        disk, why_not, problem = _resolve_one(o, hypervisor, krbd, pools)
        if disk is not None:
            rbd.append(disk)
            if target in declared:
                warnings.append("disk %s is listed in unguarded_disks but is the RBD image %s "
                                "(%s): it stays guarded; remove it from unguarded_disks, or "
                                "mark the disk <shareable/> if several writers are intended"
                                % (target, disk.spec, disk.resolved_by))
        elif problem is not None:
            kind, reason = problem
            others.append(o)
            if target in declared:
                skipped.append((o, "declared in unguarded_disks (%s)" % reason))
            else:
                problems.append(Problem(target, kind, "disk %s: %s; if it must run unguarded, "
                                        "list %s in unguarded_disks" % (target, reason, target)))
        else:
            others.append(o)
            skipped.append((o, why_not))
    for d in dom.rbd_disks:
        if d.target in declared:
            warnings.append("disk %s is listed in unguarded_disks but is the RBD image %s: it "
                            "stays guarded" % (d.target, d.spec))
    known = {d.target for d in rbd} | {o.target for o in dom.others}
    for t in sorted(declared - known):
        warnings.append("unguarded_disks names %s, which is not a disk of domain %s"
                        % (t, dom.name))
    resolved = dom._replace(rbd_disks=tuple(rbd), others=tuple(others),
                            other_disks=tuple(o.target or "?" for o in others),
                            unguarded=tuple(skipped))
    return Resolution(resolved, tuple(problems), tuple(warnings))


def _resolve_one(o, hypervisor, krbd, pools):
    """(RBDDisk, None, None) | (None, why not guarded, None) | (None, None, (kind, why))."""
    if o.type == "volume":
        return _resolve_volume(o, hypervisor, krbd, pools)
    if o.type in ("block", "file"):
        path = o.attr("dev") if o.type == "block" else o.attr("file")
        if not path:
            return None, "no source", None
        return _resolve_path(o, path, krbd)
    if o.type == "network":
        return None, "%s network disk, not RBD" % (o.attr("protocol") or "unknown"), None
    return None, "%s disk, not RBD" % o.type, None


def _not_writable(o):
    if o.device not in ("disk", "lun", "floppy"):
        return o.device
    if o.readonly:
        return "read-only"
    if o.shareable:
        return "shareable"
    return None


def _as_rbd(o, pool, ns, image, snapshot=None, readonly=None, **kw):
    return RBDDisk(target=o.target, pool=pool, namespace=ns, image=image, snapshot=snapshot,
                   device=o.device, readonly=o.readonly if readonly is None else readonly,
                   shareable=o.shareable, **kw)


# ----------------------------------------------------------------------------- volumes

class PoolInfo(NamedTuple):
    type: str
    source_name: Optional[str]
    hosts: Tuple[str, ...]
    auth_user: Optional[str]
    devices: Tuple[str, ...]
    mon_host_option: Optional[str]


def parse_pool_xml(xml):
    """PoolInfo of a libvirt storage pool XML (virStoragePoolGetXMLDesc), e.g.
        <pool type='rbd'>
          <name>ceph</name>
          <source>
            <name>rbd</name>
            <host name='10.0.0.1' port='6789'/>
            <auth type='ceph' username='vmceph'><secret uuid='...'/></auth>
          </source>
          <rbd:config_opts xmlns:rbd='http://libvirt.org/schemas/storagepool/rbd/1.0'>
            <rbd:option name='mon_host' value='...'/>      (optional, rados_conf_set)
          </rbd:config_opts>
        </pool>
    Raises ValueError if it is not a pool document."""
    from lxml import etree
    from vmceph.domxml import _parser
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as e:
        raise ValueError("storage pool XML is not well-formed: %s" % e) from None
    if root.tag != "pool":
        raise ValueError("not a storage pool document (root <%s>)" % root.tag)
    src = root.find("source")
    name = hosts = auth = None
    devices = ()
    if src is not None:
        name = (src.findtext("name") or "").strip() or None
        hosts = tuple(_host_text(h) for h in src.iterfind("host") if h.get("name"))
        a = src.find("auth")
        auth = a.get("username") if a is not None else None
        devices = tuple(d.get("path") for d in src.iterfind("device") if d.get("path"))
    mon = None
    for opt in root.iter("{http://libvirt.org/schemas/storagepool/rbd/1.0}option"):
        if _norm_key(opt.get("name") or "") == "mon_host":
            mon = opt.get("value")
    return PoolInfo(root.get("type") or "", name, hosts or (), auth, devices, mon)


def _host_text(h):
    return "%s:%s" % (h.get("name"), h.get("port")) if h.get("port") else h.get("name")


def _pool_info(name, hypervisor, pools):
    if name not in pools:
        from vmceph import virt
        try:
            pools[name] = ("ok", parse_pool_xml(hypervisor.pool_xml(name)))
        except virt.PoolNotFound:
            pools[name] = (INSTALLED, "storage pool %r is not defined on this node: define it "
                                      "on every node that may run the domain (virsh "
                                      "pool-define)" % name)
        except virt.LibvirtUnreachable as e:
            pools[name] = (UNAVAILABLE, "libvirt cannot describe storage pool %r: %s"
                                        % (name, e))
        except (virt.VirtError, ValueError) as e:
            pools[name] = (CONFIGURED, "storage pool %r cannot be read: %s" % (name, e))
    return pools[name]


def _resolve_volume(o, hypervisor, krbd, pools):
    pool, volume = o.attr("pool"), o.attr("volume")
    if not pool or not volume:
        if _not_writable(o):
            return None, _not_writable(o), None
        return None, None, (CONFIGURED, "volume disk without pool and volume attributes")
    if hypervisor is None:
        why = "storage pool %r not resolved (libvirt not asked)" % pool
        return (None, why, None) if _not_writable(o) else (None, None, (UNAVAILABLE, why))
    status, info = _pool_info(pool, hypervisor, pools)
    if status != "ok":
        if _not_writable(o):   # read-only either way: nothing to guard, say why unresolved
            return None, "%s (%s)" % (_not_writable(o), info), None
        return None, None, (status, info)
    if info.type == "rbd":
        if not info.source_name:
            return None, None, (CONFIGURED, "RBD storage pool %r names no Ceph pool "
                                            "(<source><name>)" % pool)
        if "/" in info.source_name:
            return None, None, (CONFIGURED, "RBD storage pool %r has source name %r: libvirt "
                                            "9.0 pools cannot name an RBD namespace, so the "
                                            "image it opens cannot be told"
                                % (pool, info.source_name))
        hosts = info.hosts
        if info.mon_host_option:     # set after the <host>s by libvirt: it wins
            hosts = tuple(_fmt_addr(h, p) for h, p in parse_mon_host(info.mon_host_option))
        disk = _as_rbd(o, info.source_name, None, volume, hosts=hosts,
                       auth_user=info.auth_user, config_file=None, form="volume",
                       resolved_by="libvirt RBD storage pool %r (Ceph pool %r)"
                                   % (pool, info.source_name))
        return disk, None, None
    # a pool on block devices (fs, logical, disk): on a krbd device it is RBD underneath,
    # shared by every volume of the pool; which writer is whose cannot be told
    for dev in info.devices:
        kind, detail = krbd.classify(dev)
        if kind in ("krbd", "suspect"):
            if _not_writable(o):
                return None, _not_writable(o), None
            return None, None, (CONFIGURED, "volume %r of storage pool %r (type %s) lives on "
                                            "%s (%s): the agent cannot guard an image shared "
                                            "by a whole pool" % (volume, pool, info.type, dev,
                                                                 detail))
    return None, "volume of %s storage pool %r, not RBD" % (info.type or "?", pool), None


# ----------------------------------------------------------------------------- krbd

class Mapping(NamedTuple):
    dev_id: str
    pool: str
    namespace: Optional[str]
    image: str
    snapshot: Optional[str]
    client: Optional[str]          # "client.4235"
    fsid: Optional[str]
    readonly: bool


class Krbd:
    """What this node's kernel maps, read from sysfs (roots injectable for tests)."""

    def __init__(self, sys_root="/sys", dev_root="/dev"):
        self.sys_root = sys_root
        self.dev_root = dev_root

    @property
    def bus(self):
        return os.path.join(self.sys_root, "bus", "rbd", "devices")

    def available(self):
        return os.path.isdir(self.bus)

    def _read(self, *parts):
        try:
            with open(os.path.join(*parts)) as f:
                return f.read().strip()
        except OSError:
            return None

    def mapping(self, dev_id):
        d = os.path.join(self.bus, dev_id)
        if not os.path.isdir(d):
            return None
        pool, name = self._read(d, "pool"), self._read(d, "name")
        if not pool or not name:
            return None
        ns = self._read(d, "pool_ns") or None     # absent before Linux 4.19: no namespaces
        snap = self._read(d, "current_snap")
        cid = self._read(d, "client_id") or ""     # "client4235"
        client = "client.%s" % cid[len("client"):] if cid.startswith("client") else None
        ro = self._read(self.sys_root, "block", "rbd" + dev_id, "ro") == "1"
        return Mapping(dev_id, pool, ns, name, None if snap in (None, "", "-") else snap,
                       client, self._read(d, "cluster_fsid"), ro)

    def local(self, path):
        """``/dev/...`` as seen under dev_root."""
        return os.path.join(self.dev_root, os.path.relpath(path, "/dev"))

    def _block_name(self, local):
        """Kernel name of the block device at ``local`` (by its device number), or None."""
        rdev = _rdev(local)
        if rdev is None:
            return None, ()
        link = os.path.join(self.sys_root, "dev", "block", "%d:%d" % rdev)
        real = os.path.realpath(link)
        if not os.path.exists(real):
            return None, ()
        name = os.path.basename(real)
        if os.path.exists(os.path.join(real, "partition")):
            parent = os.path.basename(os.path.dirname(real))
            name = parent if _RBD_DEV.match(parent) else name
        try:
            slaves = tuple(sorted(os.listdir(os.path.join(real, "slaves"))))
        except OSError:
            slaves = ()
        return name, slaves

    def classify(self, path):
        """(kind, detail) of a device path: ('krbd', Mapping), ('named', (pool, ns, image,
        snap)) for an unmapped /dev/rbd/... link, ('suspect', why), ('other', why)."""
        if not path.startswith("/dev/"):
            real = os.path.realpath(path)
            if not real.startswith("/dev/"):
                return "other", "local file"
            path = real
        rel = os.path.relpath(path, "/dev")
        local = self.local(path)
        named = _named_link(rel)
        dev_id = None
        m = _RBD_DEV.match(rel)
        if m:
            dev_id = m.group(1)
        elif os.path.lexists(local):
            real = os.path.realpath(local)
            base = os.path.basename(real)
            m = _RBD_DEV.match(base)
            if m and os.path.dirname(real) == os.path.realpath(self.dev_root):
                dev_id = m.group(1)
            else:
                kname, slaves = self._block_name(local)
                if kname and _RBD_DEV.match(kname):
                    dev_id = _RBD_DEV.match(kname).group(1)
                elif any(_RBD_DEV.match(s) for s in slaves):
                    return "suspect", ("a %s device stacked on %s" %
                                       (kname, ", ".join(s for s in slaves
                                                         if _RBD_DEV.match(s))))
        if dev_id is None:
            if named is not None:
                return "named", named
            return "other", "not an RBD device"
        mp = self.mapping(dev_id)
        if mp is None:
            if not self.available():
                return "suspect", ("%s is an RBD device name but this kernel maps no RBD "
                                   "device (%s absent)" % (path, self.bus))
            return "suspect", ("%s names RBD device %s, which is not mapped on this node "
                               "(no %s/%s)" % (path, dev_id, self.bus, dev_id))
        if named is not None and named[:3] != (mp.pool, mp.namespace, mp.image):
            return "suspect", ("%s says %s but the kernel maps %s there: a stale udev link"
                               % (path, _spec(*named[:3]), _spec(mp.pool, mp.namespace,
                                                                 mp.image)))
        return "krbd", mp


def _rdev(path):
    """(major, minor) of a block device node, else None (a test replaces this)."""
    import stat
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _named_link(rel):
    """(pool, ns, image, snap) from 'rbd/POOL/[NS/]IMAGE[@SNAP]' (the udev link that
    ceph's 50-rbd.rules makes), else None."""
    parts = rel.split("/")
    if parts[0] != "rbd" or len(parts) not in (3, 4) or not all(parts[1:]):
        return None
    image, _, snap = parts[-1].partition("@")
    if not image:
        return None
    return (parts[1], parts[2] if len(parts) == 4 else None, image, snap or None)


def _spec(pool, ns, image):
    return "/".join(p for p in (pool, ns, image) if p)


def _resolve_path(o, path, krbd):
    kind, detail = krbd.classify(path)
    if kind == "other":
        return None, detail, None
    if kind == "suspect":
        if _not_writable(o):
            return None, "%s (%s)" % (_not_writable(o), detail), None
        return None, None, (CONFIGURED, detail)
    if kind == "named":
        pool, ns, image, snap = detail
        return _as_rbd(o, pool, ns, image, snap, hosts=(), auth_user=None, config_file=None,
                       form="krbd", resolved_by="udev link %s (not mapped on this node now)"
                       % path), None, None
    mp = detail
    return _as_rbd(o, mp.pool, mp.namespace, mp.image, mp.snapshot,
                   readonly=o.readonly or mp.readonly, hosts=(), auth_user=None,
                   config_file=None, form="krbd", krbd_client=mp.client,
                   cluster_fsid=mp.fsid,
                   resolved_by="krbd device rbd%s (%s/bus/rbd/devices/%s)%s"
                               % (mp.dev_id, krbd.sys_root, mp.dev_id,
                                  ", mapped read-only" if mp.readonly else "")), None, None


def without_own_krbd(dom, images):
    """Image facts without this node's own krbd mapping of each krbd disk.

    The kernel client that maps a krbd disk watches the image (and takes its exclusive lock
    at the first write) before the domain starts: it is the domain's own path to the image,
    not a second writer, and its lock is not a dead holder's. Only for a start of a domain
    that is not running: once it runs, that client is its writer and counts as such."""
    own = {d.spec: d.krbd_client for d in dom.guarded_disks if d.krbd_client}
    if not own:
        return images
    out = []
    for img in images:
        ent = own.get(img.spec)
        if ent is None:
            out.append(img)
            continue
        out.append(img._replace(watchers=tuple(w for w in img.watchers if w.entity != ent),
                                lockers=tuple(lk for lk in img.lockers if lk.entity != ent)))
    return out


# ----------------------------------------------------------------------------- one cluster

class CephConf(NamedTuple):
    path: str
    fsid: Optional[str]
    mons: Tuple[Tuple[str, Optional[int]], ...]


def _norm_key(k):
    return re.sub(r"[\s_-]+", "_", k.strip().lower())


READ_TIMEOUT_S = 5.0


def _read_text(path):
    import stat
    if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO would block the read
        raise OSError("%s is not a regular file" % path)
    with open(path, errors="replace") as f:
        return f.read(1024 * 1024)


def read_conf(path, user=None, timeout=READ_TIMEOUT_S):
    """fsid and monitor addresses of a ceph.conf, the way a client reads them: [global],
    then [client], then [client.USER] (later wins); mon_host, else the [mon.X] sections'
    mon_addr. Raises OSError if it cannot be read (within ``timeout``: a disk's config
    file may sit on a network file system that hangs)."""
    from vmceph import bounded
    try:
        text = bounded.call(lambda: _read_text(path), timeout, "reading " + path)
    except bounded.Timeout as e:
        raise OSError(str(e)) from None
    sections, current = {}, None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        line = _strip_comment(line).strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections.setdefault(current, {})
            continue
        if "=" not in line or current is None:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        sections[current][_norm_key(k)] = v
    merged = {}
    for name in ("global", "client", "client.%s" % (user or "admin")):
        merged.update(sections.get(name, {}))
    mons = parse_mon_host(merged.get("mon_host", ""))
    if not mons:
        for name, kv in sorted(sections.items()):
            if name.startswith("mon.") and kv.get("mon_addr"):
                mons += parse_mon_host(kv["mon_addr"])
    return CephConf(path, (merged.get("fsid") or "").lower() or None, tuple(mons))


def _strip_comment(line):
    out, quote = [], None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "#;":
            break
        out.append(ch)
    return "".join(out)


def parse_mon_host(text):
    """[(host, port or None)] from a mon_host value: '10.0.0.1,10.0.0.2:6789',
    '[v2:10.0.0.1:3300,v1:10.0.0.1:6789] [v2:...]', 'mon1.example.com', '[::1]:6789'."""
    out, tok, depth = [], "", 0
    for ch in (text or "") + ",":
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if depth <= 0 and ch in ", ;\t":
            if tok.strip():
                out += _parse_mon_token(tok.strip())
            tok, depth = "", 0
        else:
            tok += ch
    return out


def _parse_mon_token(tok):
    if tok.startswith("[") and tok.endswith("]") and ("v1:" in tok or "v2:" in tok):
        return [a for part in tok[1:-1].split(",") for a in _parse_mon_token(part.strip())]
    for prefix in ("v2:", "v1:", "any:"):
        if tok.startswith(prefix):
            tok = tok[len(prefix):]
    tok = tok.split("/")[0]
    if tok.startswith("["):                      # [ipv6]:port
        host, _, rest = tok[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return [(host, int(port) if port.isdigit() else None)]
    if tok.count(":") == 1:
        host, port = tok.split(":")
        return [(host, int(port) if port.isdigit() else None)]
    return [(tok, None)]                         # a name, an IPv4 or a bare IPv6


def _fmt_addr(host, port):
    return "%s:%d" % (host, port) if port else host


def _norm_host(h):
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        return h.lower().rstrip(".")


def _host_keys(host, resolver):
    keys = {_norm_host(host)}
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if resolver is not None:
            keys |= {_norm_host(a) for a in resolver(host)}
    return keys


def _disk_host(h):
    """'10.0.0.1:6789' / 'name' / '[::1]:6789' (domxml's host strings) -> (host, port)."""
    return _parse_mon_token(h)[0]


def host_among(host, mons, resolver=None):
    """Is the monitor address ``host`` (from a disk or a pool) one of ``mons``?"""
    h, port = _disk_host(host)
    keys = _host_keys(h, resolver)
    for mh, mport in mons:
        if not keys & _host_keys(mh, resolver):
            continue
        if port is None or port == mport or (mport is None and port in MON_DEFAULT_PORTS):
            return True
    return False


def same_cluster(conf, ref, resolver=None):
    """(True, how) if the conf ``conf`` describes the cluster of ``ref``, else (False, why):
    the same fsid when both name one; otherwise every monitor of ``conf`` among ref's."""
    if conf.fsid and ref.fsid:
        if conf.fsid == ref.fsid:
            return True, "fsid %s" % conf.fsid
        return False, "fsid %s, not %s" % (conf.fsid, ref.fsid)
    if not conf.mons:
        return False, "it names no monitors and no fsid to compare"
    stray = [_fmt_addr(h, p) for h, p in conf.mons
             if not host_among(_fmt_addr(h, p), ref.mons, resolver)]
    if stray:
        return False, "monitor(s) %s are not monitors of %s" % (", ".join(stray), ref.path)
    return True, "same monitors"


def check_cluster(dom, ceph_conf, ceph_user=None, resolver=None, default_conf=DEFAULT_CONF,
                  krbd_fsid_required=True, read_timeout=READ_TIMEOUT_S):
    """Problems of guarded disks that do not belong to the cluster of ``ceph_conf``.

    The agent inspects every image in that cluster: a disk in another one (an rbd-mirror
    peer has the same pool and image names) would be judged on an idle copy.
    - <host> monitors (a network disk's, a pool's): each must be a monitor of ceph_conf;
    - <config file>: the same file, or the same fsid, or only monitors of ceph_conf;
    - neither: QEMU reads the node's default ceph.conf, which must then be that cluster's;
    - krbd: the mapping's cluster_fsid (sysfs) must be ceph_conf's fsid.
    Raises OSError if ceph_conf itself cannot be read."""
    ref = read_conf(ceph_conf, ceph_user, read_timeout)
    problems = []
    confs = {}

    def conf_of(path):
        if path not in confs:
            try:
                confs[path] = read_conf(path, ceph_user, read_timeout)
            except OSError as e:
                confs[path] = e
        return confs[path]

    def same_file(a, b):
        return os.path.realpath(a) == os.path.realpath(b)

    for d in dom.guarded_disks:
        t = d.target or d.spec
        if d.form == "krbd":
            fsid = d.cluster_fsid
            if not d.krbd_client:
                continue          # not mapped here: nothing to compare yet (docs/disks.md)
            if fsid and ref.fsid and fsid.lower() != ref.fsid:
                problems.append(Problem(t, CONFIGURED, "disk %s (krbd %s) is mapped from the "
                                        "Ceph cluster %s, but ceph_conf %s is cluster %s: "
                                        "the agent would inspect the wrong cluster"
                                        % (t, d.spec, fsid, ceph_conf, ref.fsid)))
            elif krbd_fsid_required and not (fsid and ref.fsid):
                problems.append(Problem(t, CONFIGURED, "disk %s (krbd %s): the cluster it is "
                                        "mapped from cannot be compared with ceph_conf %s "
                                        "(add its fsid to ceph_conf)" % (t, d.spec, ceph_conf)))
            continue
        for h in d.hosts:
            if not ref.mons:
                problems.append(Problem(t, CONFIGURED, "disk %s (%s) names monitor %s but "
                                        "ceph_conf %s lists no mon_host to compare it with"
                                        % (t, d.spec, h, ceph_conf)))
                break
            if not host_among(h, ref.mons, resolver):
                problems.append(Problem(t, CONFIGURED, "disk %s (%s) uses monitor %s, which "
                                        "is not a monitor of ceph_conf %s (%s): one resource "
                                        "must use one Ceph cluster; fix the disk's <host> "
                                        "elements or ceph_conf"
                                        % (t, d.spec, h, ceph_conf,
                                           ", ".join(_fmt_addr(*m) for m in ref.mons))))
                break
        cfg = d.config_file
        if cfg is None and d.hosts:
            continue              # QEMU reaches the monitors named: checked above
        if cfg is None:
            cfg = default_conf    # QEMU's librados reads the node's default configuration
        if same_file(cfg, ceph_conf):
            continue
        c = conf_of(cfg)
        if isinstance(c, OSError) and d.config_file:
            problems.append(Problem(t, INSTALLED, "disk %s (%s): its <config file=%s> cannot "
                                    "be read on this node (%s)" % (t, d.spec, cfg, c)))
            continue
        if isinstance(c, OSError):
            # QEMU's librados finds no configuration and so no monitor: it cannot open the
            # image at all (the start fails there), in no cluster; nothing to compare
            problems.append(Problem(t, WARNING, "disk %s (%s) names no <host> and no <config>"
                                    " and the default %s cannot be read on this node (%s): "
                                    "QEMU will not reach any Ceph cluster with it"
                                    % (t, d.spec, cfg, c)))
            continue
        ok, why = same_cluster(c, ref, resolver)
        if not ok:
            how = "its <config file=%s>" % cfg if d.config_file else \
                "the node's default %s (the disk names no <host> and no <config>)" % cfg
            problems.append(Problem(t, CONFIGURED, "disk %s (%s) uses %s, which is not the "
                                    "cluster of ceph_conf %s: %s" % (t, d.spec, how, ceph_conf,
                                                                     why)))
    return problems

