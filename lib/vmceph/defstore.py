"""Domain definitions kept in Ceph (``config=ceph:POOL/NAME``), with a short history and
compare-and-swap, and the node's local copy of the last definition it used.

Where (docs/definitions.md): one RADOS object per VM, ``vmceph.domain.NAME`` in a pool
(and optional namespace) the operator chooses. Everything lives in the object's omap:

    version           '0000000007'    the current version, ten digits (compared as text)
    current           JSON entry      the current definition and who stored it, when
    v.0000000007      JSON entry      the last HISTORY versions, the current one included

An entry is ``{"version", "who", "when", "comment", "sha256", "xml"}``.

Why a RADOS object and not the metadata of the VM's first image: an update must not be
able to overwrite a concurrent one unseen. A RADOS write operation is atomic and can carry
its own precondition: ``omap_cmp('version', N, EQ)`` (the OSD cancels the whole operation
with ECANCELED when the key differs) or an exclusive create (EEXIST) for the first
version. Image metadata (``rbd image-meta set``) has no such precondition, and a second
``put`` would silently win. The object also survives the image (a re-created disk does not
take the definition with it) and needs no image handle at all: no watch, no lock (we never
take an RBD lock of our own: advisory locks make QEMU hang).

Reading: one read operation returns ``version`` and ``current`` together (a consistent
pair). Writing: one write operation checks the version, sets the new ``version``,
``current`` and ``v.N``, and removes the entry that fell out of the history.

This module imports nothing heavy at load time: the agent's depth-0 monitor imports it
(``parse_uri``, the local copy) and must stay light; rados comes through CephSession.
"""

import os

URI_PREFIX = "ceph:"
OBJECT_PREFIX = "vmceph.domain."
HISTORY = 10
# An omap value is read whole by the OSD: definitions are small (a few KiB), so keep them
# well below what makes an OSD op slow. Larger is refused with the reason.
MAX_DEF_BYTES = 256 * 1024
CACHE_DIR_NAME = "vmceph-definitions"
ECANCELED = 125
EEXIST = 17


class DefError(Exception):
    """A definition cannot be used; ``str()`` is a sentence for an administrator."""


class InvalidDefinition(DefError):
    """The XML would not be stored (or used): malformed, wrong name, refused by libvirt's
    schema, too large."""


class Conflict(DefError):
    """A put whose expected version is no longer the current one: someone else stored a
    definition since it was read. ``current`` is that newer entry (or None)."""

    def __init__(self, message, current=None):
        super().__init__(message)
        self.current = current


class NotFound(DefError):
    pass


class Unavailable(DefError):
    """Ceph could not be asked (no quorum, timeout, permission, pool missing)."""


# ------------------------------------------------------------------ names

class DefRef:
    """Where one definition is: pool, namespace (or None), VM name."""
    __slots__ = ("pool", "namespace", "name")

    def __init__(self, pool, namespace, name):
        self.pool, self.namespace, self.name = pool, namespace, name

    @property
    def oid(self):
        return OBJECT_PREFIX + self.name

    @property
    def uri(self):
        return URI_PREFIX + "/".join(filter(None, (self.pool, self.namespace, self.name)))

    def __repr__(self):
        return "DefRef(%r)" % self.uri

    def __eq__(self, other):
        return isinstance(other, DefRef) and self.uri == other.uri

    def __hash__(self):
        return hash(self.uri)


def _check_part(what, text):
    if not text:
        raise ValueError("empty %s" % what)
    if len(text) > 200:
        raise ValueError("%s longer than 200 characters" % what)
    if not all(c.isascii() and (c.isalnum() or c in "._-+") for c in text):
        raise ValueError("%s %r: only ASCII letters, digits and . _ - + are allowed"
                         % (what, text))
    if text in (".", ".."):
        raise ValueError("%s %r is not a name" % (what, text))


def is_uri(text):
    return isinstance(text, str) and text.startswith(URI_PREFIX)


def parse_uri(text):
    """DefRef of ``ceph:POOL/NAME`` or ``ceph:POOL/NAMESPACE/NAME``; None for anything
    that does not start with 'ceph:' (a file path); ValueError for a malformed URI."""
    if not is_uri(text):
        return None
    parts = text[len(URI_PREFIX):].split("/")
    if len(parts) not in (2, 3):
        raise ValueError("%r is not ceph:POOL/NAME or ceph:POOL/NAMESPACE/NAME" % text)
    names = ("pool", "name") if len(parts) == 2 else ("pool", "namespace", "name")
    for what, part in zip(names, parts):
        _check_part(what, part)
    if len(parts) == 2:
        parts.insert(1, None)
    return DefRef(*parts)


def ref_of(text, pool=None, namespace=None):
    """A DefRef from a full URI, or from a VM name with the pool (and namespace) given."""
    if is_uri(text):
        return parse_uri(text)
    _check_part("name", text)
    if not pool:
        raise ValueError("a VM name (%r) needs a pool: give --pool, or ceph:POOL/NAME" % text)
    _check_part("pool", pool)
    if namespace:
        _check_part("namespace", namespace)
    return DefRef(pool, namespace or None, text)


# ------------------------------------------------------------------ validation

def check_definition(ref, data, xml_validator=None):
    """The parsed Domain of ``data`` if it may be stored as (or used from) ``ref``; else
    InvalidDefinition naming the reason. Same hardened parser as for files (domxml); the
    domain's <name> must be the definition's name, so one VM's definition can never be
    stored, or started, as another's; ``xml_validator(data)`` (libvirt's schema, when
    virt-xml-validate is installed) returns None or the reason for refusing."""
    from vmceph.domxml import DomainXMLError, parse_domain
    from vmceph.inputs import libvirt_uuid
    if isinstance(data, str):
        data = data.encode("utf-8")
    source = "definition %s" % ref.uri
    if len(data) > MAX_DEF_BYTES:
        raise InvalidDefinition("%s: %d bytes, more than the %d a definition in Ceph may "
                                "have" % (source, len(data), MAX_DEF_BYTES))
    try:
        dom = parse_domain(data, source=source)
    except DomainXMLError as e:
        raise InvalidDefinition(str(e)) from None
    if dom.name != ref.name:
        raise InvalidDefinition("%s: the domain is named %r, not %r: a definition holds the "
                                "domain of its own name only" % (source, dom.name, ref.name))
    if dom.uuid and libvirt_uuid(dom.uuid) is None:
        raise InvalidDefinition("%s: <uuid>%s</uuid> is not a UUID libvirt accepts"
                                % (source, dom.uuid[:60]))
    if xml_validator is not None:
        why = xml_validator(data)
        if why:
            raise InvalidDefinition("%s: refused by libvirt's schema: %s" % (source, why))
    return dom


def virt_xml_validate(data, timeout=20.0):
    """libvirt's schema check (``virt-xml-validate FILE domain``) when the program is
    installed: None (valid, or no program), else its complaint."""
    import shutil
    import tempfile
    from vmceph import bounded
    prog = shutil.which("virt-xml-validate")
    if prog is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        f.write(data)
        f.flush()
        try:
            r = bounded.command([prog, f.name, "domain"], timeout)
        except bounded.Timeout:
            return "virt-xml-validate did not finish within %.0f s" % timeout
    if r.rc == 0:
        return None
    text = (r.err or r.out or "").replace(f.name, "<definition>").strip()
    return " / ".join(text.splitlines()[:5]) or "rc %d" % r.rc


# ------------------------------------------------------------------ entries

def make_entry(version, data, who, when, comment=""):
    import hashlib
    xml = data.decode("utf-8") if isinstance(data, bytes) else data
    return {"version": version, "who": who, "when": when, "comment": comment or "",
            "sha256": hashlib.sha256(xml.encode("utf-8")).hexdigest(), "xml": xml}


def vkey(version):
    return "v.%010d" % version


def vtext(version):
    return "%010d" % version


def who_am_i():
    """'user@host' of whoever runs the command (the sudo caller when there is one)."""
    import getpass
    import socket
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return "%s@%s" % (user, socket.gethostname())


def now_utc():
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_plan(current_version, entry):
    """(omap keys to set, keys to remove) of the write that stores ``entry`` as version
    current+1: pure, so the history rule is tested without Ceph."""
    import json
    new = entry["version"]
    assert new == current_version + 1
    text = json.dumps(entry, sort_keys=True).encode("utf-8")
    sets = {"version": vtext(new).encode(), "current": text, vkey(new): text}
    drop = [vkey(new - HISTORY)] if new - HISTORY >= 1 else []
    return sets, drop


# ------------------------------------------------------------------ the store

class Store:
    """Definitions of one pool/namespace, through a connected CephSession (its deadline
    and caps bound every call; a call that times out is left to its thread, as
    CephSession does). ``backend`` replaces the RADOS calls in tests."""

    def __init__(self, session, pool, namespace=None, backend=None):
        self.pool, self.namespace = pool, namespace
        self.backend = backend or RadosBackend(session, pool, namespace)

    def current(self, name):
        """The current entry (dict), or None when there is no definition of ``name``."""
        vals = self.backend.read(OBJECT_PREFIX + name, ("version", "current"))
        if vals is None or "current" not in vals:
            return None
        return _entry(vals["current"])

    def history(self, name):
        """Entries of the kept versions, oldest first; [] when there is none."""
        vals = self.backend.read_prefix(OBJECT_PREFIX + name, "v.")
        if vals is None:
            return []
        return [_entry(v) for k, v in sorted(vals.items())]

    def version(self, name, version):
        vals = self.backend.read(OBJECT_PREFIX + name, (vkey(version),))
        if not vals or vkey(version) not in vals:
            return None
        return _entry(vals[vkey(version)])

    def put(self, ref, data, expect, who=None, comment="", validator=virt_xml_validate):
        """Store ``data`` as the next version if the current one is ``expect`` (0: there
        must be none). Returns the new entry; Conflict when another put came first;
        InvalidDefinition when the XML is refused (nothing is stored)."""
        check_definition(ref, data, validator)
        entry = make_entry(expect + 1, data, who or who_am_i(), now_utc(), comment)
        sets, drop = write_plan(expect, entry)
        ok = self.backend.write(ref.oid, expect, sets, drop)
        if not ok:
            cur = self.current(ref.name)
            if cur is None:
                raise Conflict("definition %s: expected version %d, but there is none (it "
                               "was removed meanwhile): nothing stored" % (ref.uri, expect))
            raise Conflict("definition %s changed meanwhile: version %d was stored by %s at "
                           "%s, your change was based on version %d and was NOT stored; "
                           "look at 'vmceph config diff %s' and put it again"
                           % (ref.uri, cur["version"], cur["who"], cur["when"], expect,
                              ref.uri), cur)
        return entry


def _entry(raw):
    import json
    try:
        e = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        if not isinstance(e, dict) or not isinstance(e.get("xml"), str):
            raise ValueError("not an entry")
        e["version"] = int(e["version"])
        return e
    except (ValueError, KeyError, TypeError) as err:
        raise DefError("a definition entry in Ceph is damaged (%s): store it again with "
                       "'vmceph config put'" % err) from None


class RadosBackend:
    """The three RADOS operations the store needs, each bounded and translated."""

    def __init__(self, session, pool, namespace):
        self.session, self.pool, self.namespace = session, pool, namespace

    def _call(self, work, what):
        from vmceph import bounded
        from vmceph.ceph import CephError
        s = self.session
        rados = s.rados
        try:
            cap = s._left(s.OSD_OP_CAP) + 1.0
        except CephError as e:
            raise Unavailable(str(e)) from None
        try:
            return bounded.call(work, cap, what)
        except bounded.Timeout:
            s.abandoned.append(what)
            raise Unavailable("%s did not finish within %.0f s (OSDs unreachable?)"
                              % (what, cap)) from None
        except (rados.PermissionDeniedError, rados.PermissionError):
            raise Unavailable("client.%s may not %s (its caps must allow reading and "
                              "writing objects in pool %s)" % (s.user or "admin", what,
                                                               self.pool)) from None
        except rados.Error as e:
            if abs(getattr(e, "errno", 0) or 0) == 110:    # rados.TimedOut (ETIMEDOUT)
                raise Unavailable("%s timed out: this node cannot reach the OSDs or a "
                                  "monitor quorum" % what) from None
            raise Unavailable("%s failed: %s" % (what, e)) from None

    def _open(self):
        s, rados = self.session, self.session.rados
        try:
            ioctx = s.cluster.open_ioctx(self.pool)
        except rados.ObjectNotFound:
            raise Unavailable("Ceph pool %s does not exist" % self.pool) from None
        if self.namespace:
            ioctx.set_namespace(self.namespace)
        return ioctx

    def read(self, oid, keys):
        return self._read_omap(oid, lambda ioctx, op: ioctx.get_omap_vals_by_keys(
            op, tuple(keys)))

    def read_prefix(self, oid, prefix):
        return self._read_omap(oid, lambda ioctx, op: ioctx.get_omap_vals(
            op, "", prefix, HISTORY * 4))

    def _read_omap(self, oid, select):
        """dict of the omap values ``select(ioctx, op)`` asks for; None if no object."""
        rados = self.session.rados

        def work():
            ioctx = self._open()
            try:
                with rados.ReadOpCtx() as op:
                    it, _ = select(ioctx, op)
                    ioctx.operate_read_op(op, oid)
                    return dict(it)
            except rados.ObjectNotFound:
                return None
            finally:
                ioctx.close()
        return self._call(work, "read %s/%s" % (self.pool, oid))

    def write(self, oid, expect, sets, drop):
        """True when written; False when the precondition failed (the OSD cancelled the
        whole operation: nothing of it is applied)."""
        rados = self.session.rados

        def work():
            ioctx = self._open()
            try:
                with rados.WriteOpCtx() as op:
                    if expect == 0:
                        op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                    else:
                        op.omap_cmp("version", vtext(expect), rados.LIBRADOS_CMPXATTR_OP_EQ)
                    keys = tuple(sets)
                    ioctx.set_omap(op, keys, tuple(sets[k] for k in keys))
                    if drop:
                        ioctx.remove_omap_keys(op, tuple(drop))
                    ioctx.operate_write_op(op, oid)
                return True
            except rados.ObjectExists:
                return False
            except rados.ObjectNotFound:
                return False              # omap_cmp on a removed object
            except rados.Error as e:
                if abs(getattr(e, "errno", 0) or 0) in (ECANCELED, EEXIST):
                    return False
                raise
            finally:
                ioctx.close()
        return self._call(work, "write %s/%s" % (self.pool, oid))


# ------------------------------------------------------------------ for the agent

def fetch(ref, ceph_conf, ceph_user, ceph_keyring, deadline, log=None, session_cls=None):
    """The current XML (bytes) of ``ref``, checked like a put checks it (the schema
    aside: it was checked when stored); Unavailable / NotFound / InvalidDefinition."""
    from vmceph.ceph import CephError, CephSession
    from vmceph.ocf import Share
    cls = session_cls or CephSession
    session = cls(ceph_conf, ceph_user or None, ceph_keyring or None,
                  Share(deadline, 0.3, 30.0), log)
    try:
        try:
            session.connect()
        except CephError as e:
            raise Unavailable(str(e)) from None
        entry = Store(session, ref.pool, ref.namespace).current(ref.name)
    finally:
        session.close()
    if entry is None:
        raise NotFound("there is no definition %s in Ceph (store one with 'vmceph config "
                       "put %s FILE')" % (ref.uri, ref.uri))
    data = entry["xml"].encode("utf-8")
    check_definition(ref, data)
    return data, entry


# ------------------------------------------------------------------ the local copy

def cache_path(environ, ref):
    """Where this node keeps its copy of ``ref``: in the resource agents' state directory
    (HA_RSCTMP, else /run/resource-agents), which is new at every boot. On purpose: the
    copy serves the probe, monitor and stop of a domain that runs here, and a domain runs
    here only if a start or migration since the last boot wrote the copy; a copy from
    before a reboot could only be stale."""
    from vmceph import ocf
    base = ocf.state_dirs(environ)[0]
    # ',' never appears in a part (_check_part): pool 'a_b' + 'c' and pool 'a', namespace
    # 'b', 'c' must not share a file
    name = ocf.state_file_name("", ",".join(filter(None, (ref.pool, ref.namespace,
                                                          ref.name))), ".xml")
    return os.path.join(base, CACHE_DIR_NAME, name)


def cache_write(environ, ref, data):
    """Replace the local copy atomically (0600: a definition may carry secrets' UUIDs and
    host names); the path, or raises OSError."""
    path = cache_path(environ, ref)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def cache_read(environ, ref):
    """The local copy (bytes), or None when this node has none."""
    import stat
    path = cache_path(environ, ref)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            return f.read(MAX_DEF_BYTES + 1)
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


# ------------------------------------------------------------------ diff and log

def diff(old, new, old_label, new_label):
    """Unified diff of two XML texts ('' when equal)."""
    import difflib
    return "".join(difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), old_label, new_label))


def log_lines(history):
    """One line per kept version, newest first, with its lines added/removed."""
    out, prev = [], None
    rows = []
    for e in history:
        plus = minus = 0
        if prev is not None:
            for line in diff(prev["xml"], e["xml"], "a", "b").splitlines()[2:]:
                if line.startswith("+"):
                    plus += 1
                elif line.startswith("-"):
                    minus += 1
        rows.append((e, "+%d -%d" % (plus, minus) if prev is not None else "first kept"))
        prev = e
    for e, change in reversed(rows):
        out.append("v%-4d %s  %-24s %-12s %s%s" % (
            e["version"], e["when"], e["who"], change, e["sha256"][:12],
            ("  " + e["comment"]) if e["comment"] else ""))
    return out
