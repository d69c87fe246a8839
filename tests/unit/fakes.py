"""Fakes of Ceph (``rados``, ``rbd``) and libvirt that behave like the real thing.

Like the real things, they keep state across calls, raise the *real* exception classes of
Debian's ``rados``, ``rbd`` and ``libvirt`` modules (a fake whose ``Error`` is a plain
``Exception`` hides bugs), and their API classes mirror the real ones: ``@mirrors(Real)``
refuses, at import, a fake method the real class lacks, and checks every call's arguments
against the real signature (what ``mock.create_autospec`` does, without building a Mock per
object), so a misspelt method or a wrong argument in the code under test fails the test.

Answers are shaped like the ones captured from Debian 12's Ceph 16.2.15 and libvirt 9.0
(docs/ceph-facts.md):
- ``mon_command`` answers by prefix with the JSON the monitors give, and reports errors as
  codes, never exceptions: ``(-110, b'', 'timed out')``, ``(-13, b'', 'access denied')``;
- ``osd blocklist ls`` is two JSON arrays back to back;
- without quorum a new ``connect()`` raises ``rados.TimedOut`` after ``client_mount_timeout``
  and ``quorum_status`` gives -110 after ``rados_mon_op_timeout``, while ``health`` still
  answers a stale HEALTH_OK. The fake refuses to simulate a wait that the real library would
  make *unbounded* (no timeout configured): that is a bug in the caller, reported loudly;
- a read-only image handle registers no watch; ``lock_get_owners()`` fails on it with
  InvalidArgument and ``lock_break()`` with ReadOnlyImage; ``lock_break`` blocklists the
  holder; a blocklisted client's watch lingers until the test expires it;
- libvirt errors are ``libvirt.libvirtError`` with the ``err`` tuple the C library fills in,
  so ``get_error_code()``/``get_error_domain()`` classify them as for real.

Using them: ``ceph = FakeCeph(); host = FakeLibvirt("node1")``; inject ``ceph.rados``,
``ceph.rbd`` and ``host.module`` as the modules ``rados``, ``rbd`` and ``libvirt``
(``install(monkeypatch, ceph, host)``) or pass them to ``CephSession(rados_mod=, rbd_mod=)``.
"""

import functools
import inspect
import itertools
import json
import os
import re
import threading
import time
import types

import pytest

real_rados = pytest.importorskip(
    "rados", reason="Debian's python3-rados is needed (run the tests with /usr/bin/python3)")
real_rbd = pytest.importorskip(
    "rbd", reason="Debian's python3-rbd is needed (run the tests with /usr/bin/python3)")
real_libvirt = pytest.importorskip(
    "libvirt", reason="Debian's python3-libvirt is needed (run the tests with /usr/bin/python3)")


# ------------------------------------------------------------------------- mirroring

def real_signature(real_cls, name):
    """inspect.Signature of ``real_cls.name``, or None where the binding hides it (the
    Cython wrappers of rbd.Image give ``(self, *args, **kwargs)``).

    Cython's introspected signatures drop the defaults (``Rados.connect(self, timeout)``),
    while the embedded docstring keeps them (``Rados.connect(self, timeout: int = 0)``):
    the defaults are taken from there."""
    fn = getattr(real_cls, name)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = {p.kind for p in sig.parameters.values()}
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return None
    optional = _doc_optional_params(fn, name)
    if optional:
        sig = sig.replace(parameters=[
            p.replace(default=None) if p.name in optional and p.default is p.empty else p
            for p in sig.parameters.values()])
    return sig


def _doc_optional_params(fn, name):
    """Names of the parameters with a default in a Cython docstring's signature line,
    e.g. 'Rados.mon_command(self, unicode cmd: str, bytes inbuf: bytes, timeout: int = 0,
    target: Optional[Union[str, int]] = None) -> ...' gives {'timeout', 'target'}."""
    doc = (getattr(fn, "__doc__", None) or "").strip()
    m = re.match(r"^[\w.]*%s\((.*)\)" % re.escape(name), doc.split("\n")[0])
    if not m:
        return set()
    pieces, depth, cur = [], 0, ""
    for ch in m.group(1):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            pieces.append(cur)
            cur = ""
        else:
            cur += ch
    pieces.append(cur)
    out = set()
    for piece in pieces:
        head, eq, _ = piece.partition("=")
        words = head.split(":")[0].split()
        if eq and words:
            out.add(words[-1])
    return out


def mirrors(real_cls, extra=()):
    """Class decorator for a fake API class.

    Every public method of the fake must exist on ``real_cls`` (so a fake cannot invent an
    API the code would then rely on); each call is checked against the real method's
    signature when the binding exposes one. ``extra`` names test-only members allowed
    anyway (none should be needed: test controls live on the state objects)."""
    def deco(fake_cls):
        for name, fn in list(vars(fake_cls).items()):
            if name.startswith("_") or not callable(fn) or name in extra:
                continue
            if not hasattr(real_cls, name):
                raise TypeError("fake %s.%s does not exist on the real %s.%s"
                                % (fake_cls.__name__, name, real_cls.__module__,
                                   real_cls.__name__))
            sig = real_signature(real_cls, name)
            if sig is not None:
                setattr(fake_cls, name, _checked(fn, sig, real_cls, name))
        fake_cls._real = real_cls
        return fake_cls
    return deco


def _checked(fn, sig, real_cls, name):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            sig.bind(self, *args, **kwargs)
        except TypeError as e:
            raise TypeError("%s.%s%s called with %r %r: %s"
                            % (real_cls.__name__, name, sig, args, kwargs, e)) from None
        return fn(self, *args, **kwargs)
    wrapper.__wrapped_real__ = (real_cls, name)
    return wrapper


def public_methods(cls):
    return sorted(n for n, v in vars(cls).items() if not n.startswith("_") and callable(v))


def _module(name, real, fill):
    """A module object for sys.modules: the real module's exception classes and constants,
    then the fake's own classes and functions."""
    mod = types.ModuleType(name, "fake %s (tests/unit/fakes.py)" % name)
    for k, v in vars(real).items():
        if isinstance(v, type) and issubclass(v, BaseException):
            setattr(mod, k, v)                       # the REAL exception classes
        elif k.isupper() and isinstance(v, (int, str)):
            setattr(mod, k, v)                       # the real constants
    for k, v in fill.items():
        setattr(mod, k, v)
    mod.__fake__ = True
    return mod


# ------------------------------------------------------------------------- Ceph

ETIMEDOUT, EACCES, EPERM, ENOENT, EINVAL, EBUSY, EROFS, ESHUTDOWN = 110, 13, 1, 2, 22, 16, 30, 108

# Options Rados(conf=...) may set. The real conf_set refuses an unknown option (ENOENT), so
# a misspelt timeout would fail for real: the fake refuses it too.
KNOWN_CONF = {
    "client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout", "admin_socket",
    "log_to_stderr", "err_to_stderr", "keyring", "log_file", "debug_rados", "debug_ms",
    "debug_rbd", "mon_host", "rbd_blocklist_expire_seconds", "client_quota",
    "rbd_blocklist_on_break_lock", "objecter_tick_interval", "objecter_timeout",
}

# `ceph quorum_status -f json` on the three-mon lab (Pacific 16.2.15), trimmed of features.
QUORUM_STATUS = {
    "election_epoch": 14, "quorum": [0, 1, 2], "quorum_names": ["node1", "node2", "node3"],
    "quorum_leader_name": "node1", "quorum_age": 1841,
    "features": {"quorum_con": "4540138297136906239",
                 "quorum_mon": ["kraken", "luminous", "mimic", "osdmap-prune", "nautilus",
                                "octopus", "pacific", "elector-pinging"]},
    "monmap": {
        "epoch": 3, "fsid": "6c1e5b2e-4f0a-4be8-9a43-0d0c7d7d2b1e",
        "modified": "2026-11-25T23:41:07.219315Z", "created": "2026-11-25T23:40:51.008871Z",
        "min_mon_release": 16, "min_mon_release_name": "pacific", "election_strategy": 1,
        "disallowed_leaders: ": "", "stretch_mode": False, "tiebreaker_mon": "",
        "mons": [],
    },
}

HEALTH_OK = {"status": "HEALTH_OK", "checks": {}, "mutes": []}


def health_warn_osd_down():
    """`ceph health detail -f json` with one OSD down (HEALTH_WARN)."""
    return {"status": "HEALTH_WARN", "checks": {
        "OSD_DOWN": {"severity": "HEALTH_WARN",
                     "summary": {"message": "1 osds down", "count": 1},
                     "detail": [{"message": "osd.2 (root=default,host=node3) is down"}],
                     "muted": False},
        "OSD_HOST_DOWN": {"severity": "HEALTH_WARN",
                          "summary": {"message": "1 host (1 osds) down", "count": 1},
                          "detail": [{"message": "host node3 (root=default) (1 osds) is down"}],
                          "muted": False}}, "mutes": []}


def health_err_pg_availability():
    return {"status": "HEALTH_ERR", "checks": {
        "PG_AVAILABILITY": {"severity": "HEALTH_ERR",
                            "summary": {"message": "Reduced data availability: 32 pgs "
                                                   "inactive", "count": 32},
                            "detail": [], "muted": False}}, "mutes": []}


def health_pgs_inactive(lines, count=None):
    """`ceph health detail -f json` with PG_AVAILABILITY raised: ``lines`` its detail
    messages, e.g. 'pg 2.1 is stuck inactive for 62s, current state unknown, last acting
    []'; ``count`` the summary's count (more than the lines when the monitors truncate)."""
    count = len(lines) if count is None else count
    return {"status": "HEALTH_WARN", "checks": {
        "PG_AVAILABILITY": {"severity": "HEALTH_WARN",
                            "summary": {"message": "Reduced data availability: %d pgs "
                                                   "inactive" % count, "count": count},
                            "detail": [{"message": m} for m in lines], "muted": False}},
        "mutes": []}


class ImageState:
    """One RBD image as the cluster knows it: lock and watches (shared by every handle)."""

    def __init__(self, pool, namespace, name):
        self.pool, self.namespace, self.name = pool, namespace, name
        self.lockers = []          # [(entity, cookie, addr)] of the exclusive-lock
        self.watchers = []         # [{'addr', 'id', 'cookie'}]
        self.snapshots = set()
        self.lock_breaks = []      # (mode, owner) as lock_break got them
        self.metadata = {}         # image-meta key -> str (omap 'metadata_<key>' of the header)
        self.id = "%012x" % (abs(hash((pool, namespace, name))) % (1 << 48))

    @property
    def spec(self):
        parts = [self.pool] + ([self.namespace] if self.namespace else []) + [self.name]
        return "/".join(parts)

    def lockers_answer(self):
        """list_lockers(): [] when unlocked, else the dict librbd gives."""
        if not self.lockers:
            return []
        return {"tag": "internal", "exclusive": True, "lockers": list(self.lockers)}


class Client:
    """A Ceph client instance: global id, address 'ip:0/nonce'."""

    def __init__(self, gid, ip, nonce):
        self.gid, self.ip, self.nonce = gid, ip, nonce

    @property
    def addr(self):
        return "%s:0/%d" % (self.ip, self.nonce)

    @property
    def entity(self):
        return "client.%d" % self.gid


class FakeCeph:
    """One fake Ceph cluster with its ``rados`` and ``rbd`` modules (``.rados``, ``.rbd``).

    Test controls: ``add_image``, ``qemu_writes`` (a QEMU that opened an image read-write and
    wrote: watch + exclusive lock), ``expire_watches``, ``lose_quorum``/``restore_quorum``,
    ``health``, ``caps`` ('admin'; 'rbd': mon 'profile rbd', may not remove blocklist
    entries; 'none': no mon caps at all), ``auth_ok``, ``deny_pool``, ``hang_mon``.
    Records: ``sessions`` (every Rados that connected or tried to), ``commands`` (every mon/mgr command as a dict),
    ``blocklist`` (addr -> expiry time)."""

    def __init__(self, mons=("node1", "node2", "node3"), client_ip="10.252.0.1",
                 timeline=None):
        self.timeline = [] if timeline is None else timeline   # shared with FakeLibvirt
        self.mons = list(mons)
        self.quorum = list(mons)
        self.on_connect = None
        self.health = dict(HEALTH_OK)
        self.caps = "admin"
        self.auth_ok = True
        self.client_ip = client_ip          # where this node's sessions come from
        self.pools = {"rbd": {}}            # pool -> {(namespace, name): ImageState}
        self.denied_pools = set()
        self.pg_states = {}                 # pool -> [(pgid, state)]
        self.mgr_up = True
        self.blocklist = {}                 # 'ip:port/nonce' -> expiry (epoch seconds)
        self.config_keys = {}               # monitor config-key store: key -> str
        self.sessions = []
        self.commands = []
        self.hang_mon = threading.Event()   # set: mon commands block (released at teardown)
        self.hang_osd = threading.Event()   # set: image calls block (released at teardown)
        self.use_after_free = []            # image calls that resumed on a freed handle
        # OSD map epochs. Every blocklist change is a new map; each OSD gets it after its
        # own propagation delay, or at once when an operation carrying a newer epoch
        # arrives (an OSD handles an op only once it has the op's map). A session keeps
        # the map it connected with until wait_for_latest_osdmap().
        self.osdmap_epoch = 1
        self.epoch_committed = {1: 0.0}     # epoch -> time the monitors committed it
        self.osd_delay = [5.0, 5.0, 5.0]    # per OSD: seconds until it has a new map
        self.osd_bumped = [1, 1, 1]         # per OSD: epoch learnt from operations
        self.blocklist_epoch = {}           # addr -> epoch of the map carrying its entry
        self.unsafe_breaks = []             # lock breaks an OSD did before it knew the holder
                                            # was blocklisted: (spec, addr, osd epoch, needed)
        self.release = threading.Event()
        self.silent = set()                 # client addresses whose process is gone
        self._gids = itertools.count(4235)
        self._nonces = itertools.count(3154213287)
        self._cookies = itertools.count(94823928102912)
        self.rados = _module("rados", real_rados, {
            "Rados": type("Rados", (Rados,), {"_ceph": self}),
            "Ioctx": Ioctx,
            "WriteOpCtx": WriteOpCtx,
        })
        self.rbd = _module("rbd", real_rbd, {"Image": Image, "RBD": RBD})

    # ---------------------------------------------------------------- controls
    def new_client(self, ip):
        return Client(next(self._gids), ip, next(self._nonces))

    def add_image(self, spec):
        pool, ns, name = _split(spec)
        self.pools.setdefault(pool, {})
        st = ImageState(pool, ns, name)
        self.pools[pool][(ns or "", name)] = st
        return st

    def image(self, spec):
        pool, ns, name = _split(spec)
        return self.pools[pool][(ns or "", name)]

    def qemu_writes(self, spec, ip, lock=True):
        """A QEMU at ``ip`` opened ``spec`` read-write (a watch) and wrote (the exclusive
        lock, cookie 'auto <watch cookie>'). Returns its Client."""
        client = self.new_client(ip)
        img = self.image(spec)
        cookie = next(self._cookies)
        img.watchers.append({"addr": client.addr, "id": client.gid, "cookie": cookie})
        if lock:
            img.lockers = [(client.entity, "auto %d" % cookie, client.addr)]
        return client

    def kill_client(self, addr):
        """The process of client ``addr`` is gone: its watch stays (until expire_watches)
        but answers no notification any more (Ioctx.notify)."""
        self.silent.add(addr)

    def expire_watches(self, addr):
        """The OSDs drop the watches of ``addr`` (osd_client_watch_timeout; ~46 s after a
        whole node died). Until a test calls this, a dead client's watch lingers, as it
        does for real; a blocklisted one's goes with the entry (_blocklist)."""
        self._drop_watches(lambda a: a == addr)

    def _drop_watches(self, match):
        for pool in self.pools.values():
            for img in pool.values():
                img.watchers = [w for w in img.watchers if not match(w["addr"])]

    def lose_quorum(self, survivors=("node1",)):
        self.quorum = [m for m in self.mons if m in survivors]

    def restore_quorum(self):
        self.quorum = list(self.mons)

    @property
    def has_quorum(self):
        return len(self.quorum) * 2 > len(self.mons)

    def deny_pool(self, pool):
        self.denied_pools.add(pool)

    def is_blocklisted(self, addr):
        return addr in self.blocklist

    @staticmethod
    def host_entry_of(addr):
        """'10.0.0.2:0/77' -> '10.0.0.2:0/0': the OSDs refuse a client whose address or
        whose IP with port 0 and nonce 0 is listed (fence_vmceph's host-wide entry)."""
        return addr.rsplit(":", 1)[0] + ":0/0"

    def entry_epoch(self, addr):
        """Epoch of the map carrying the entry that refuses ``addr`` (its own or its
        host's, the older one), None when none does."""
        found = [self.blocklist_epoch.get(a) for a in (addr, self.host_entry_of(addr))
                 if a in self.blocklist]
        found = [e for e in found if e is not None]
        return min(found) if found else None

    def mon_prefixes(self):
        return [c.get("prefix") for c in self.commands]

    # ---------------------------------------------------------------- OSD map model
    def new_epoch(self):
        self.osdmap_epoch += 1
        self.epoch_committed[self.osdmap_epoch] = time.time()
        return self.osdmap_epoch

    def osd_epoch(self, osd, now=None):
        now = time.time() if now is None else now
        by_time = max(e for e, t in self.epoch_committed.items()
                      if e == 1 or t + self.osd_delay[osd] <= now)
        return max(by_time, self.osd_bumped[osd])

    def osd_of(self, spec, obj="header"):
        """The primary OSD of an object of an image (a fixed hash, like CRUSH)."""
        return sum(map(ord, spec + "/" + obj)) % len(self.osd_delay)

    def osd_op(self, op_epoch, spec, obj="header"):
        """An operation carrying ``op_epoch`` reaches the object's OSD: the OSD first gets
        that map. Returns (osd, the OSD's epoch while it handles the op)."""
        osd = self.osd_of(spec, obj)
        self.osd_bumped[osd] = max(self.osd_bumped[osd], op_epoch)
        return osd, self.osd_epoch(osd)

    def client_write(self, client, spec, obj="data.0", op_epoch=None):
        """``client`` (a Client, e.g. a QEMU of qemu_writes) writes an object of ``spec``.
        True if an OSD accepted it: refused only by an OSD whose map carries the client's
        blocklist entry (ConnectionShutdown on the client for real)."""
        _osd, epoch = self.osd_op(op_epoch or 1, spec, obj)
        needed = self.entry_epoch(client.addr)
        accepted = needed is None or epoch < needed
        self.timeline.append(("ceph", "write " + ("accepted" if accepted else "refused"),
                              spec, client.addr))
        return accepted

    def close(self):
        self.release.set()

    # ---------------------------------------------------------------- monitor side
    def _quorum_status(self):
        q = json.loads(json.dumps(QUORUM_STATUS))
        q["quorum"] = [self.mons.index(m) for m in self.quorum]
        q["quorum_names"] = list(self.quorum)
        q["quorum_leader_name"] = self.quorum[0] if self.quorum else ""
        q["monmap"]["mons"] = [
            {"rank": i, "name": m,
             "public_addrs": {"addrvec": [
                 {"type": "v2", "addr": "10.252.0.%d:3300" % (i + 1), "nonce": 0},
                 {"type": "v1", "addr": "10.252.0.%d:6789" % (i + 1), "nonce": 0}]},
             "addr": "10.252.0.%d:6789/0" % (i + 1),
             "public_addr": "10.252.0.%d:6789/0" % (i + 1),
             "priority": 0, "weight": 0, "crush_location": "{}"}
            for i, m in enumerate(self.mons)]
        return q

    def mon_command(self, session, cmd):
        """(ret, outbuf bytes, outs str) for one monitor command, as librados returns it."""
        self.commands.append(dict(cmd))
        if self.hang_mon.is_set():
            self.release.wait(30)
            return -ETIMEDOUT, b"", "timed out"
        prefix = cmd.get("prefix")
        if self.caps == "none":             # a user without mon caps
            return -EACCES, b"", "access denied"
        if prefix == "health":
            # answered even without quorum, from the mon's last (stale) state (docs/ceph-facts.md)
            return 0, json.dumps(self.health).encode(), ""
        if prefix == "status":
            return 0, json.dumps({"fsid": QUORUM_STATUS["monmap"]["fsid"],
                                  "health": self.health,
                                  "quorum_names": list(self.quorum) if self.has_quorum else []
                                  }).encode(), ""
        if not self.has_quorum:
            if float(session.conf.get("rados_mon_op_timeout", "0") or 0) <= 0:
                raise AssertionError("mon_command %r without quorum and without "
                                     "rados_mon_op_timeout would block forever" % prefix)
            return -ETIMEDOUT, b"", "timed out"
        if prefix == "quorum_status":
            return 0, json.dumps(self._quorum_status()).encode(), ""
        if prefix == "osd lspools":
            # pool ids in creation order from 2 (pool 1 is .mgr on a real cluster)
            return 0, json.dumps([{"poolnum": k + 2, "poolname": name}
                                  for k, name in enumerate(self.pools)]).encode(), ""
        if prefix == "osd blocklist ls":
            return self._blocklist(dict(cmd, blocklistop="ls"))
        if prefix.startswith("config-key "):
            # the config-key module is no part of mon 'profile rbd' (its grants cover the
            # mon, osd and pg services and 'osd blocklist add'): refused to such a user
            if self.caps != "admin":
                return -EACCES, b"", "access denied"
            key = cmd.get("key", "")
            if prefix == "config-key set":
                self.config_keys[key] = cmd.get("val", "")
                return 0, b"", "set " + key
            if prefix == "config-key get":
                if key not in self.config_keys:
                    return -ENOENT, b"", "error obtaining '%s': (2) No such file or directory" \
                        % key
                return 0, self.config_keys[key].encode(), ""
        if prefix == "osd blocklist":
            if cmd.get("blocklistop") == "ls":   # what a real 16.2.15 monitor answers
                return -EINVAL, b"", "unable to parse address "
            return self._blocklist(cmd)
        return -EINVAL, b"", "command not known"

    def _blocklist(self, cmd):
        op = cmd.get("blocklistop")
        if op == "ls":
            entries = [{"addr": a, "until": _stamp(t)} for a, t in sorted(self.blocklist.items())]
            # Pacific prints the entries and then the ranges, two arrays back to back
            out = json.dumps(entries) + json.dumps([])
            return 0, out.encode(), "listed %d entries" % len(entries)
        addr = cmd.get("addr", "")
        if not re.match(r"^[0-9a-fA-F.:\[\]]+(:\d+/\d+)?$", addr):
            return -EINVAL, b"", "unable to parse address %s" % addr
        if "/" not in addr:
            addr += ":0/0"        # a bare IP is stored as IP:0/0 (every client of the host)
        if op == "add":
            expire = float(cmd.get("expire", 3600.0))
            self.blocklist[addr] = time.time() + expire
            self.blocklist_epoch[addr] = self.new_epoch()
            self.timeline.append(("ceph", "blocklist add", addr, expire))
            # The OSDs drop the watches of a client the new map refuses. Measured in the
            # lab (Ceph 16.2.15, 2026-12-01): a SIGKILLed process's watch was gone 1.07 s
            # after 'ceph osd blocklist add' of its address (CLI round included), while its
            # exclusive lock stayed until broken.
            self._drop_watches(lambda a: a == addr or self.host_entry_of(a) == addr)
            return 0, b"", "blocklisting %s until %s (%d sec)" % (
                addr, _stamp(self.blocklist[addr]), expire)
        if op == "rm":
            if self.caps != "admin":
                return -EACCES, b"", "access denied"
            if self.blocklist.pop(addr, None) is None:
                return 0, b"", "%s isn't blocklisted" % addr
            return 0, b"", "un-blocklisting %s" % addr
        return -EINVAL, b"", "invalid blocklistop"

    def mgr_command(self, session, cmd):
        self.commands.append(dict(cmd, _target="mgr"))
        if not self.mgr_up or not self.has_quorum:
            return -ETIMEDOUT, b"", "timed out"
        if cmd.get("prefix") == "pg ls-by-pool":
            pool = cmd.get("poolstr")
            if pool not in self.pools:
                return -ENOENT, b"", "pool '%s' does not exist" % pool
            states = self.pg_states.get(pool, [("2.%x" % i, "active+clean") for i in range(4)])
            stats = [{"pgid": pgid, "state": st, "up": [0, 1, 2], "acting": [0, 1, 2],
                      "up_primary": 0, "acting_primary": 0} for pgid, st in states]
            return 0, json.dumps({"pg_ready": True, "pg_stats": stats}).encode(), ""
        return -EINVAL, b"", "command not known"


def _stamp(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(t))


def _split(spec):
    parts = spec.split("/")
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def _rados_error(ret, msg):
    """The exception the real binding raises for a negative return (rados.make_ex)."""
    kind = {-EACCES: real_rados.PermissionDeniedError, -1: real_rados.PermissionError,
            -ETIMEDOUT: real_rados.TimedOut, -EINVAL: real_rados.InvalidArgumentError,
            -ENOENT: real_rados.ObjectNotFound}.get(ret, real_rados.OSError)
    return kind(msg, errno=-ret)


def _rados_state_error(state):
    return real_rados.RadosStateError(
        "You cannot perform that operation on a Rados object in state %s." % state)


@mirrors(real_rados.Rados)
class Rados:
    """rados.Rados for one FakeCeph (the module's class is a subclass bound to it)."""
    _ceph = None

    def __init__(self, rados_id=None, name=None, clustername=None, conf_defaults=None,
                 conffile=None, conf=None, flags=0, context=None):
        if rados_id is not None and name is not None:
            raise real_rados.Error("Rados(): can't supply both rados_id and name")
        self.rados_id = rados_id
        self.conffile = conffile
        self.conf = {}
        self.state = "configuring"
        self.client = None
        self.epoch = 0                  # OSD map epoch this client has
        if conffile:
            import stat
            try:
                fifo = stat.S_ISFIFO(os.stat(conffile).st_mode)
            except OSError:
                fifo = False
            if fifo:   # librados reads the file here: a FIFO blocks it until a writer comes
                with open(conffile, "rb") as f:
                    f.read()
            if not os.path.isfile(conffile):
                raise real_rados.ObjectNotFound("error calling conf_read_file", errno=ENOENT)
        for k, v in (conf or {}).items():
            self.conf_set(k, v)
        # a handle that only read its configuration file (validation does that) never
        # talked to the cluster: sessions records those that tried to connect

    def conf_set(self, option, val):
        if not isinstance(option, str) or not isinstance(val, str):
            raise TypeError("conf_set: option and value must be str, got %r=%r" % (option, val))
        if option not in KNOWN_CONF:
            raise real_rados.ObjectNotFound("error calling conf_set", errno=ENOENT)
        self.conf[option] = val

    def conf_get(self, option):
        return self.conf.get(option)

    def connect(self, timeout=0):
        # timeout= is ignored by the real binding (Ceph PR #40932): so is it here
        if self.state != "configuring":
            raise _rados_state_error(self.state)
        ceph = self._ceph
        ceph.sessions.append(self)
        if ceph.on_connect:        # what the rest of the world does while this one connects
            ceph.on_connect()
        if not ceph.auth_ok:
            raise real_rados.PermissionDeniedError("error connecting to the cluster",
                                                   errno=EACCES)
        if not ceph.has_quorum:
            mount = float(self.conf.get("client_mount_timeout", "300"))
            if mount >= 300:
                raise AssertionError("connect() without quorum would block %.0f s: set "
                                     "client_mount_timeout" % mount)
            raise real_rados.TimedOut("error connecting to the cluster", errno=ETIMEDOUT)
        self.client = ceph.new_client(ceph.client_ip)
        self.epoch = ceph.osdmap_epoch
        self.state = "connected"

    def wait_for_latest_osdmap(self):
        self._require_connected()
        ceph = self._ceph
        if not ceph.has_quorum:
            if float(self.conf.get("rados_mon_op_timeout", "0") or 0) <= 0:
                raise AssertionError("wait_for_latest_osdmap without quorum and without "
                                     "rados_mon_op_timeout would block forever")
            raise real_rados.TimedOut("error waiting for latest OSD map", errno=ETIMEDOUT)
        self.epoch = ceph.osdmap_epoch
        ceph.timeline.append(("ceph", "wait_for_latest_osdmap", self.epoch))
        return 0

    def shutdown(self):
        self.state = "shutdown"

    def get_addrs(self):
        if self.state not in ("configuring", "connected"):
            raise _rados_state_error(self.state)
        if self.client is None:
            raise AssertionError("get_addrs() before connect(): the real librados 16.2.15 "
                                 "segfaults here")
        return "v2:%s" % self.client.addr

    def _require_connected(self):
        if self.state != "connected":
            raise _rados_state_error(self.state)

    def mon_command(self, cmd, inbuf, timeout=0, target=None):
        if not isinstance(cmd, str) or not isinstance(inbuf, bytes):
            raise TypeError("mon_command(cmd: str, inbuf: bytes)")
        self._require_connected()
        return self._ceph.mon_command(self, json.loads(cmd))

    def mgr_command(self, cmd, inbuf, timeout=0, target=None):
        if not isinstance(cmd, str) or not isinstance(inbuf, bytes):
            raise TypeError("mgr_command(cmd: str, inbuf: bytes)")
        self._require_connected()
        return self._ceph.mgr_command(self, json.loads(cmd))

    def blocklist_add(self, client_address, expire_seconds=0):
        """rados_blocklist_add as python3-rados 16.2.15 has it: expire_seconds is a C int
        (a float is a TypeError), 0 = the monitors' default (3600 s); librados sends the
        command below (no 'format'; 'expire' only when not 0, as 'N.0') and a failure
        raises the exception type of its errno (rados.make_ex). librados then waits for
        the newest OSD map; not modelled here: callers wait for it themselves
        (wait_for_latest_osdmap), which the fencing order needs and tests check."""
        if not isinstance(client_address, str):
            raise TypeError("client_address must be str")
        if not isinstance(expire_seconds, int) or isinstance(expire_seconds, bool):
            raise TypeError("an integer is required (expire_seconds)")
        self._require_connected()
        cmd = {"prefix": "osd blocklist", "blocklistop": "add", "addr": client_address}
        if expire_seconds:
            cmd["expire"] = float(expire_seconds)
        ret, _out, _err = self._ceph.mon_command(self, cmd)
        if ret < 0:
            raise _rados_error(ret, "error blocklisting client '%s'" % client_address)

    def open_ioctx(self, ioctx_name):
        self._require_connected()
        if ioctx_name not in self._ceph.pools:
            raise real_rados.ObjectNotFound("error opening pool '%s'" % ioctx_name,
                                            errno=ENOENT)
        return Ioctx(self, ioctx_name)


@mirrors(real_rados.Ioctx)
class Ioctx:
    def __init__(self, rados, name):
        self.rados = rados
        self.name = name
        self.nspace = ""
        self.state = "open"

    def set_namespace(self, nspace):
        if not isinstance(nspace, str):
            raise TypeError("set_namespace(nspace: str)")
        self.nspace = nspace

    def get_namespace(self):
        return self.nspace

    def close(self):
        self.state = "closed"

    def set_omap(self, write_op, keys, values):
        if self.state != "open":
            raise real_rados.IoctxStateError("The pool is closed.")
        write_op._omap.update(zip(keys, values))

    def notify(self, obj, msg="", timeout_ms=5000):
        """rados_notify2 on an image's header object: every watcher acknowledges, unless
        its process is gone (FakeCeph.kill_client; its watch lingers until
        expire_watches): then the notify waits out ``timeout_ms`` (scaled down here) and
        fails with ETIMEDOUT, as the real one does."""
        if self.state != "open":
            raise real_rados.IoctxStateError("The pool is closed.")
        ceph = self.rados._ceph
        for (ns, _name), st in ceph.pools.get(self.name, {}).items():
            if ns == self.nspace and obj == "rbd_header." + st.id:
                ceph.timeline.append(("ceph", "notify", st.spec))
                if any(w["addr"] in ceph.silent for w in st.watchers):
                    time.sleep(min(timeout_ms / 1000.0, 0.05))
                    raise real_rados.TimedOut("Failed to notify %r" % obj, errno=ETIMEDOUT)
                return True
        raise real_rados.ObjectNotFound("Failed to notify %r" % obj, errno=ENOENT)

    def operate_write_op(self, write_op, oid, mtime=0, flags=0):
        """Only what the agent writes: image metadata into an image's header object."""
        if self.state != "open":
            raise real_rados.IoctxStateError("The pool is closed.")
        ceph = self.rados._ceph
        for (ns, _name), st in ceph.pools.get(self.name, {}).items():
            if ns == self.nspace and oid == "rbd_header." + st.id:
                for k, v in write_op._omap.items():
                    if k.startswith("metadata_"):
                        st.metadata[k[len("metadata_"):]] = v.decode("utf-8")
                ceph.timeline.append(("ceph", "omap set", st.spec, dict(write_op._omap)))
                return
        raise real_rados.ObjectNotFound("Failed to operate write op for oid %s" % oid,
                                        errno=ENOENT)


@mirrors(real_rados.WriteOpCtx)
class WriteOpCtx:
    def __init__(self):
        self._omap = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@mirrors(real_rbd.RBD)
class RBD:
    def list(self, ioctx):
        ceph = ioctx.rados._ceph
        return sorted(n for (ns, n) in ceph.pools[ioctx.name] if ns == ioctx.nspace)


@mirrors(real_rbd.Image)
class Image:
    """rbd.Image over the FakeCeph of ``ioctx``: a read-write handle registers a watch of
    its own session for as long as it is open, a read-only one does not."""

    def __init__(self, ioctx, name=None, snapshot=None, read_only=False, image_id=None,
                 _oncomplete=None):
        if ioctx.state != "open":
            raise real_rbd.InvalidArgument("ioctx is closed", errno=EINVAL)
        session = ioctx.rados
        ceph = session._ceph
        what = "error opening image %s at snapshot %s" % (str(name).encode(), snapshot)
        if session.client is not None and session.client.addr in ceph.blocklist:
            raise real_rbd.ConnectionShutdown(what, errno=ESHUTDOWN)
        if ioctx.name in ceph.denied_pools:
            raise real_rbd.PermissionError(what, errno=EPERM)
        st = ceph.pools.get(ioctx.name, {}).get((ioctx.nspace, name))
        if st is None or (snapshot is not None and snapshot not in st.snapshots):
            raise real_rbd.ImageNotFound(what, errno=ENOENT)
        self._st = st
        self._session = session
        self._ioctx = ioctx
        self.name = name
        self.read_only = bool(read_only or snapshot is not None)
        self.closed = False
        self._watch = None
        if not self.read_only:
            self._watch = {"addr": session.client.addr, "id": session.client.gid,
                           "cookie": next(ceph._cookies)}
            st.watchers.append(self._watch)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if not self.closed and self._watch is not None and self._watch in self._st.watchers:
            self._st.watchers.remove(self._watch)
        self.closed = True

    def _open(self):
        if self.closed:
            raise real_rbd.InvalidArgument("RBD image %s is closed" % self.name, errno=EINVAL)
        ceph = self._session._ceph
        if ceph.hang_osd.is_set():
            # an OSD that does not answer: the call outlives any timeout of the caller;
            # when it resumes, its handles must still be alive (real librbd: segfault)
            ceph.release.wait(30)
            if self._ioctx.state != "open" or self._session.state != "connected":
                ceph.use_after_free.append((self.name, self._ioctx.state,
                                            self._session.state))

    def list_lockers(self):
        self._open()
        return self._st.lockers_answer()

    def id(self):
        self._open()
        return self._st.id

    def metadata_get(self, key):
        self._open()
        if key not in self._st.metadata:
            raise KeyError("no metadata %s for image %s" % (key.encode(), self.name.encode()))
        return self._st.metadata[key]

    def watchers_list(self):
        self._open()
        return iter([dict(w) for w in self._st.watchers])

    def lock_get_owners(self):
        self._open()
        if self.read_only:
            raise real_rbd.InvalidArgument("error getting lock owners for image %s"
                                           % self.name, errno=EINVAL)
        # librbd 16.2.15 names the owner by its address, as measured in the lab:
        # [{'mode': 0, 'owner': '10.180.0.2:0/2022063107'}]
        return iter([{"mode": real_rbd.RBD_LOCK_MODE_EXCLUSIVE, "owner": addr}
                     for _entity, _cookie, addr in self._st.lockers])

    def lock_break(self, mode, lock_owner):
        self._open()
        if self.read_only:
            raise real_rbd.ReadOnlyImage("error breaking lock on image %s" % self.name,
                                         errno=EROFS)
        holders = [lk for lk in self._st.lockers if lk[2] == lock_owner]
        if not holders:
            raise real_rbd.ImageBusy("error breaking lock on image %s" % self.name,
                                     errno=EBUSY)
        ceph = self._session._ceph
        conf = self._session.conf
        blocklisted_before = ceph.entry_epoch(lock_owner) is not None
        # librbd's BreakRequest: blocklist the holder (rbd_blocklist_on_break_lock, default
        # true; expiry rbd_blocklist_expire_seconds, 0 = the monitors' 3600 s), wait for the
        # new OSD map, then break. The blocklist goes to the monitors as a command like ours.
        if conf.get("rbd_blocklist_on_break_lock", "true") == "true":
            expire = float(conf.get("rbd_blocklist_expire_seconds", "0")) or 3600.0
            cmd = {"prefix": "osd blocklist", "blocklistop": "add", "addr": holders[0][2],
                   "expire": expire, "format": "json"}
            ceph.commands.append(dict(cmd))
            ret, _out, _err = ceph._blocklist(cmd)
            if ret == -EACCES:
                raise real_rbd.PermissionError("error breaking lock on image %s" % self.name,
                                               errno=EACCES)
            self._session.epoch = ceph.osdmap_epoch   # librbd waits for the new map
            blocklisted_before = True
        # The break is an operation on the header object, carrying this session's epoch.
        _osd, osd_epoch = ceph.osd_op(self._session.epoch, self._st.spec)
        needed = ceph.entry_epoch(lock_owner)
        if not blocklisted_before or needed is None or osd_epoch < needed:
            ceph.unsafe_breaks.append((self._st.spec, lock_owner, osd_epoch, needed))
        self._st.lock_breaks.append((mode, lock_owner))
        ceph.timeline.append(("ceph", "lock_break", self._st.spec, lock_owner))
        self._st.lockers = [lk for lk in self._st.lockers if lk[2] != lock_owner]


# ------------------------------------------------------------------------- libvirt

VIR = real_libvirt


def libvirt_error(code, domain, message, level=None):
    """A real libvirt.libvirtError, filled in as libvirt-python fills it from
    virGetLastError(): err = (code, domain, message, level, str1, str2, str3, int1, int2)."""
    e = real_libvirt.libvirtError(message)
    Exception.__init__(e, message)
    e.err = (code, domain, message, VIR.VIR_ERR_ERROR if level is None else level,
             message, None, None, -1, -1)
    return e


def no_domain(what):
    return libvirt_error(VIR.VIR_ERR_NO_DOMAIN, VIR.VIR_FROM_QEMU,
                         "Domain not found: no domain with matching %s" % what)


def connection_lost():
    return libvirt_error(VIR.VIR_ERR_SYSTEM_ERROR, VIR.VIR_FROM_RPC,
                         "Cannot recv data: Connection reset by peer")


class Guest:
    """One domain on a FakeLibvirt host.

    Behaviour knobs: ``acpi`` 'obey' (powers off after ``shutdown_polls`` state queries) or
    'ignore' (a guest with no OS, docs/lab.md); ``agent`` whether a QEMU guest agent answers;
    ``destroy`` 'ok' or 'stuck' (destroy returns, the domain stays: a QEMU in D state)."""

    def __init__(self, name, uuid, xml, persistent=False):
        self.name, self.uuid, self.xml = name, uuid, xml
        self.persistent = persistent
        self.state, self.reason = VIR.VIR_DOMAIN_SHUTOFF, VIR.VIR_DOMAIN_SHUTOFF_SHUTDOWN
        self.acpi = "obey"
        self.agent = False
        self.shutdown_polls = 1
        self.destroy = "ok"
        self._pending_off = None
        self.job = None                 # a running migration: {'abort': Event, ...}
        self.completed_job = None

    @property
    def active(self):
        return self.state != VIR.VIR_DOMAIN_SHUTOFF

    def run(self, reason=None):
        self.state = VIR.VIR_DOMAIN_RUNNING
        self.reason = VIR.VIR_DOMAIN_RUNNING_BOOTED if reason is None else reason

    def start(self, paused, reason=None):
        """createXML/restore: with ``paused`` (START_PAUSED, SAVE_PAUSED) the QEMU runs and
        has its disks open, its vCPUs do not: libvirt reports "paused (user)" (lab)."""
        if paused:
            self.state, self.reason = VIR.VIR_DOMAIN_PAUSED, VIR.VIR_DOMAIN_PAUSED_USER
        else:
            self.run(reason)

    def _tick(self, host):
        """A state query: a guest that was asked to shut down gets there eventually."""
        if self._pending_off is not None:
            self._pending_off -= 1
            if self._pending_off <= 0:
                host.power_off(self, VIR.VIR_DOMAIN_SHUTOFF_SHUTDOWN)


class FakeLibvirt:
    """One node's libvirtd, with its ``libvirt`` module (``.module``).

    State persists across connections within a test (domains defined/running), as libvirtd's
    does across agent runs. Controls: ``add_guest``, ``reachable`` (False: libvirtd down),
    ``migration`` ('complete', 'block' until abortJob, 'fail'), ``on_create``/``on_stop``
    hooks (e.g. to make a QEMU a writer of its RBD images in a FakeCeph). Records: ``calls``
    [(method, domain name or None, args)]."""

    def __init__(self, hostname="node1", registry=None, timeline=None):
        self.hostname = hostname
        self.timeline = [] if timeline is None else timeline   # shared with FakeCeph
        self.guests = {}
        self.reachable = True
        self.migration = "complete"
        self.migration_stats = {"type": VIR.VIR_DOMAIN_JOB_UNBOUNDED, "time_elapsed": 250,
                                "memory_total": 1073741824, "memory_remaining": 536870912,
                                "memory_processed": 536870912, "memory_iteration": 1}
        self.calls = []
        self.error_handlers = []
        self.opened = 0
        self.on_create = None
        self.on_stop = None
        self.on_migrate = None
        self.on_resume = None
        self.create_delay = 0.0         # createXML/restore take this long, even abandoned
        self.save_error = None          # save() fails with this libvirt message
        self.delays = {}                # method name -> seconds it blocks (goes on after
        #                                 the caller abandoned it, as a C call does)
        self.config_dir = None          # libvirt's own persistent definitions (undefine
        #                                 deletes <config_dir>/<name>.xml, as libvirtd does)
        self.networks = {}              # libvirt network name -> active (bool)
        self.pools = {}                 # storage pool name -> active (bool)
        self.registry = {} if registry is None else registry
        self.registry[hostname] = self
        host = self
        self.module = _module("libvirt", real_libvirt, {
            "libvirtError": real_libvirt.libvirtError,
            "open": lambda name=None: host._open(name),
            "registerErrorHandler": lambda f, ctx: host._register(f, ctx),
            "virConnect": Connection,
            "virDomain": Domain,
        })

    # ---------------------------------------------------------------- controls
    def add_guest(self, name, uuid=None, xml=None, running=True, persistent=False):
        uuid = uuid or "6f1d2c3a-0000-4000-8000-%012d" % (len(self.guests) + 1)
        g = Guest(name, uuid, xml or "<domain type='kvm'><name>%s</name><uuid>%s</uuid>"
                  "</domain>" % (name, uuid), persistent)
        if running:
            g.run()
        self.guests[name] = g
        return g

    def guest(self, name):
        return self.guests.get(name)

    def running(self, name):
        g = self.guests.get(name)
        return g is not None and g.active

    def record(self, method, name, args):
        self.calls.append((method, name, args))
        self.timeline.append(("libvirt:" + self.hostname, method, name))

    def called(self, method):
        return [c for c in self.calls if c[0] == method]

    def crash(self, name):
        """The guest crashed and on_crash='preserve' keeps it: state CRASHED, its QEMU (and
        its RBD clients) still there."""
        g = self.guests[name]
        g.state, g.reason = VIR.VIR_DOMAIN_CRASHED, VIR.VIR_DOMAIN_CRASHED_PANICKED

    def power_off(self, guest, reason):
        guest.state, guest.reason = VIR.VIR_DOMAIN_SHUTOFF, reason
        guest._pending_off = None
        if not guest.persistent:
            self.guests.pop(guest.name, None)
        if self.on_stop:
            self.on_stop(guest)

    # ---------------------------------------------------------------- module functions
    def _register(self, f, ctx):
        self.error_handlers.append((f, ctx))
        return 0

    def _open(self, name):
        # a URI naming another registered host connects to that host's libvirtd, as
        # qemu+tcp://node2/system does (migrateToURI3 routes the same way)
        m = re.match(r"^[a-z0-9+]+://(?:[^@/]+@)?([^:/?]+)", name or "")
        other = self.registry.get(m.group(1)) if m else None
        if other is not None and other is not self:
            return other._open(name)
        self.record("open", None, (name,))
        if not self.reachable:
            raise libvirt_error(VIR.VIR_ERR_SYSTEM_ERROR, VIR.VIR_FROM_RPC,
                                "Failed to connect socket to '/var/run/libvirt/libvirt-sock': "
                                "No such file or directory")
        self.opened += 1
        return Connection(self, name)

    def _check(self):
        if not self.reachable:
            raise connection_lost()

    def _find(self, uuid, name=None):
        self._check()
        for g in self.guests.values():
            if g.uuid == uuid:
                return g
        raise no_domain("uuid '%s'" % uuid + (" (%s)" % name if name else ""))


@mirrors(real_libvirt.virConnect)
class Connection:
    def __init__(self, host, uri):
        self._host = host
        self._uri = uri
        self._closed = False

    def _h(self):
        if self._closed:
            raise libvirt_error(VIR.VIR_ERR_INVALID_CONN, VIR.VIR_FROM_DOMAIN,
                                "invalid connection pointer in virDomainLookupByName")
        self._host._check()
        return self._host

    def getHostname(self):
        return self._h().hostname

    def close(self):
        self._closed = True
        return 0

    def lookupByName(self, name):
        h = self._h()
        h.record("lookupByName", name, ())
        g = h.guests.get(name)
        if g is None:
            raise no_domain("name '%s'" % name)
        return Domain(h, g.uuid)

    def lookupByUUIDString(self, uuidstr):
        h = self._h()
        h.record("lookupByUUIDString", None, (uuidstr,))
        g = h._find(uuidstr)
        return Domain(h, g.uuid)

    def createXML(self, xmlDesc, flags=0):
        h = self._h()
        m_name = re.search(r"<name>\s*([^<]+?)\s*</name>", xmlDesc)
        m_uuid = re.search(r"<uuid>\s*([^<]+?)\s*</uuid>", xmlDesc)
        if not m_name:
            raise libvirt_error(VIR.VIR_ERR_XML_ERROR, VIR.VIR_FROM_DOMAIN,
                                "XML error: missing domain name information")
        name = m_name.group(1)
        h.record("createXML", name, (flags,))
        g = h.guests.get(name)
        uuid = m_uuid.group(1) if m_uuid else "6f1d2c3a-1111-4000-8000-%012d" % len(h.guests)
        if g is not None and g.uuid != uuid:
            raise libvirt_error(VIR.VIR_ERR_OPERATION_FAILED, VIR.VIR_FROM_DOMAIN,
                                "operation failed: domain '%s' already exists with uuid %s"
                                % (name, g.uuid))
        if g is not None and g.active:
            raise libvirt_error(VIR.VIR_ERR_OPERATION_INVALID, VIR.VIR_FROM_DOMAIN,
                                "Requested operation is not valid: domain '%s' is already "
                                "active" % name)
        if g is None:
            # libvirtd lists the domain from the moment it takes the call, shut off and
            # transient, while it launches QEMU (qemuDomainCreateXML adds it to the list
            # first): a stop looking meanwhile sees "shut off" (vmceph.createmark)
            g = Guest(name, uuid, xmlDesc)
            h.guests[name] = g
        g.xml = xmlDesc
        if h.create_delay:
            time.sleep(h.create_delay)  # goes on (and creates) after a caller gave up
        g.start(bool(flags & VIR.VIR_DOMAIN_START_PAUSED))
        if h.on_create:
            h.on_create(g)
        return Domain(h, g.uuid)

    def restore(self, frm):
        h = self._h()
        h.record("restore", None, (frm,))
        with open(frm) as f:
            name, uuid = f.read().split()[:2]
        g = Guest(name, uuid, "<domain><name>%s</name><uuid>%s</uuid></domain>" % (name, uuid))
        g.run(VIR.VIR_DOMAIN_RUNNING_RESTORED)
        h.guests[name] = g
        if h.on_create:
            h.on_create(g)
        return 0

    def restoreFlags(self, frm, dxml=None, flags=0):
        h = self._h()
        h.record("restoreFlags", None, (frm, flags))
        if h.create_delay:
            time.sleep(h.create_delay)
        with open(frm) as f:
            name, uuid = f.read().split()[:2]
        g = Guest(name, uuid, "<domain><name>%s</name><uuid>%s</uuid></domain>" % (name, uuid))
        g.start(bool(flags & VIR.VIR_DOMAIN_SAVE_PAUSED), VIR.VIR_DOMAIN_RUNNING_RESTORED)
        h.guests[name] = g
        if h.on_create:
            h.on_create(g)
        return 0

    def networkLookupByName(self, name):
        h = self._h()
        if name in h.networks:
            return Network(h, name)
        raise libvirt_error(VIR.VIR_ERR_NO_NETWORK, VIR.VIR_FROM_NETWORK,
                            "Network not found: no network with matching name '%s'" % name)

    def storagePoolLookupByName(self, name):
        h = self._h()
        if name in h.pools:
            return StoragePool(h, name)
        raise libvirt_error(VIR.VIR_ERR_NO_STORAGE_POOL, VIR.VIR_FROM_STORAGE,
                            "Storage pool not found: no storage pool with matching name '%s'"
                            % name)


@mirrors(real_libvirt.virNetwork)
class Network:
    """A libvirt network of a FakeLibvirt host (``host.networks``: name -> active)."""

    def __init__(self, host, name):
        self._host, self._name = host, name

    def isActive(self):
        self._host._check()
        return 1 if self._host.networks[self._name] else 0

    def create(self):
        self._host._check()
        self._host.record("networkCreate", self._name, ())
        self._host.networks[self._name] = True
        return 0


@mirrors(real_libvirt.virStoragePool)
class StoragePool:
    """A storage pool of a FakeLibvirt host (``host.pools``: name -> active)."""

    def __init__(self, host, name):
        self._host, self._name = host, name

    def isActive(self):
        self._host._check()
        return 1 if self._host.pools[self._name] else 0

    def create(self, flags=0):
        self._host._check()
        self._host.record("poolCreate", self._name, (flags,))
        self._host.pools[self._name] = True
        return 0


class _Converged(Exception):
    """A blocked fake migration that completes (suspend, post-copy)."""


@mirrors(real_libvirt.virDomain)
class Domain:
    """A virDomain handle: refers to its guest by UUID, like the real one."""

    def __init__(self, host, uuid):
        self._host = host
        self._uuid = uuid
        self._name = next((g.name for g in host.guests.values() if g.uuid == uuid), None)

    def _g(self, method=None, *args):
        g = self._host._find(self._uuid, self._name)
        if method:
            self._host.record(method, g.name, args)
        return g

    def name(self):
        return self._g().name

    def UUIDString(self):
        return self._uuid

    def ID(self):
        return 1 if self._g().active else -1

    def state(self, flags=0):
        g = self._g()
        g._tick(self._host)
        return [g.state, g.reason]

    def isActive(self):
        g = self._g()
        g._tick(self._host)
        return 1 if g.active else 0

    def isPersistent(self):
        return 1 if self._g().persistent else 0

    def undefine(self):
        g = self._g("undefine")
        if self._host.config_dir and g.persistent:
            try:
                os.unlink(os.path.join(self._host.config_dir, g.name + ".xml"))
            except FileNotFoundError:
                pass
        if g.active:
            g.persistent = False
        else:
            self._host.guests.pop(g.name, None)
        return 0

    def _require_active(self, g):
        if not g.active:
            raise libvirt_error(VIR.VIR_ERR_OPERATION_INVALID, VIR.VIR_FROM_DOMAIN,
                                "Requested operation is not valid: domain is not running")

    def shutdownFlags(self, flags=0):
        g = self._g("shutdownFlags", flags)
        self._require_active(g)
        if flags & VIR.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT and not (
                flags & VIR.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) and not g.agent:
            raise libvirt_error(VIR.VIR_ERR_AGENT_UNRESPONSIVE, VIR.VIR_FROM_QEMU,
                                "Guest agent is not responding: QEMU guest agent is not "
                                "connected")
        if g.acpi == "obey" or (flags & VIR.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT and g.agent):
            g._pending_off = g.shutdown_polls
        return 0

    def destroyFlags(self, flags=0):
        g = self._g("destroyFlags", flags)
        self._require_active(g)
        if g.destroy == "ok":
            self._host.power_off(g, VIR.VIR_DOMAIN_SHUTOFF_DESTROYED)
        return 0

    def XMLDesc(self, flags=0):
        return self._g("XMLDesc", flags).xml

    def resume(self):
        g = self._g("resume")
        self._require_active(g)
        if g.state == VIR.VIR_DOMAIN_PAUSED:
            g.run(VIR.VIR_DOMAIN_RUNNING_UNPAUSED)
            if self._host.on_resume:
                self._host.on_resume(g)
        return 0

    def save(self, to):
        g = self._g("save", to)
        self._require_active(g)
        time.sleep(self._host.delays.get("save", 0))
        if self._host.save_error or not os.path.isdir(os.path.dirname(to) or "."):
            # as libvirt 9.0 reports a state file it cannot create (qemuSaveImageCreate)
            raise libvirt_error(VIR.VIR_ERR_SYSTEM_ERROR, VIR.VIR_FROM_QEMU,
                                self._host.save_error or "Failed to create file '%s': No "
                                "such file or directory" % to)
        with open(to, "w") as f:
            f.write("%s %s\n" % (g.name, g.uuid))
        self._host.power_off(g, VIR.VIR_DOMAIN_SHUTOFF_SAVED)
        return 0

    def jobStats(self, flags=0):
        g = self._g()
        time.sleep(self._host.delays.get("jobStats", 0))
        if flags & VIR.VIR_DOMAIN_JOB_STATS_COMPLETED:
            return dict(g.completed_job or {})
        if g.job is None:
            return {"type": VIR.VIR_DOMAIN_JOB_NONE}
        return dict(self._host.migration_stats)

    def abortJob(self):
        g = self._g("abortJob")
        time.sleep(self._host.delays.get("abortJob", 0))
        if g.job is None:
            raise libvirt_error(VIR.VIR_ERR_OPERATION_INVALID, VIR.VIR_FROM_QEMU,
                                "Requested operation is not valid: no job is active on the "
                                "domain")
        g.job["abort"].set()
        return 0

    def migrateSetMaxDowntime(self, downtime, flags=0):
        g = self._g("migrateSetMaxDowntime", downtime)
        if g.job is None:
            raise libvirt_error(VIR.VIR_ERR_OPERATION_INVALID, VIR.VIR_FROM_QEMU,
                                "Requested operation is not valid: no job is active on the "
                                "domain")
        g.job["downtime"] = downtime
        return 0

    # typed parameters and their types (libvirt-domain.h); a list: a parameter libvirt
    # takes several times (libvirt-python accepts a list of values for it)
    _PARAMS = {VIR.VIR_MIGRATE_PARAM_URI: str, VIR.VIR_MIGRATE_PARAM_BANDWIDTH: int,
               VIR.VIR_MIGRATE_PARAM_DEST_NAME: str, VIR.VIR_MIGRATE_PARAM_DEST_XML: str,
               VIR.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: int,
               VIR.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: int,
               VIR.VIR_MIGRATE_PARAM_TLS_DESTINATION: str, VIR.VIR_MIGRATE_PARAM_COMPRESSION: list,
               VIR.VIR_MIGRATE_PARAM_COMPRESSION_MT_LEVEL: int,
               VIR.VIR_MIGRATE_PARAM_COMPRESSION_MT_THREADS: int,
               VIR.VIR_MIGRATE_PARAM_COMPRESSION_MT_DTHREADS: int,
               VIR.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE: int,
               VIR.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: int,
               VIR.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT: int,
               VIR.VIR_MIGRATE_PARAM_GRAPHICS_URI: str, VIR.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: str}

    def suspend(self):
        g = self._g("suspend")
        self._require_active(g)
        g.state, g.reason = VIR.VIR_DOMAIN_PAUSED, VIR.VIR_DOMAIN_PAUSED_USER
        if g.job is not None:       # a paused guest stops dirtying memory: the job converges
            g.job["switched"] = "suspend"
            g.job["abort"].set()
        return 0

    def migrateStartPostCopy(self, flags=0):
        g = self._g("migrateStartPostCopy", flags)
        if g.job is None or not g.job["flags"] & VIR.VIR_MIGRATE_POSTCOPY:
            # as libvirt 9.0 (qemuDomainMigrateStartPostCopy)
            raise libvirt_error(VIR.VIR_ERR_OPERATION_INVALID, VIR.VIR_FROM_QEMU,
                                "Requested operation is not valid: switching to post-copy "
                                "requires migration to be started with "
                                "VIR_MIGRATE_POSTCOPY flag")
        g.job["switched"] = "postcopy"
        g.job["abort"].set()
        return 0

    def migrateToURI3(self, dconnuri, params, flags=0):
        host = self._host
        g = self._g("migrateToURI3", dconnuri, dict(params), flags)
        self._require_active(g)
        for k, v in params.items():
            if k not in self._PARAMS or not isinstance(v, self._PARAMS[k]):
                raise libvirt_error(VIR.VIR_ERR_INVALID_ARG, VIR.VIR_FROM_NONE,
                                    "invalid argument: unsupported parameter '%s'" % k)
        if not flags & VIR.VIR_MIGRATE_PEER2PEER:
            raise libvirt_error(VIR.VIR_ERR_ARGUMENT_UNSUPPORTED, VIR.VIR_FROM_DOMAIN,
                                "argument unsupported: direct migration is not supported by "
                                "the source host")
        m = re.match(r"^[a-z0-9+]+://(?:[^@/]+@)?([^:/]+)", dconnuri)
        dest = host.registry.get(m.group(1)) if m else None
        if dest is None or not dest.reachable:
            raise libvirt_error(VIR.VIR_ERR_SYSTEM_ERROR, VIR.VIR_FROM_RPC,
                                "unable to connect to server at '%s:16509': Connection "
                                "refused" % (m.group(1) if m else dconnuri))
        if host.migration == "fail":
            raise libvirt_error(VIR.VIR_ERR_OPERATION_FAILED, VIR.VIR_FROM_QEMU,
                                "operation failed: migration out job: unexpectedly failed")
        g.job = {"abort": threading.Event(), "downtime": None, "flags": flags,
                 "switched": None}
        try:
            if host.migration == "block":
                # never converges: ends when aborted, or completes once the guest is
                # suspended or the job switched to post-copy
                if not g.job["abort"].wait(20):
                    raise AssertionError("fake migration never aborted")
                if g.job["switched"]:
                    job = g.job
                    raise _Converged()
                raise libvirt_error(VIR.VIR_ERR_OPERATION_ABORTED, VIR.VIR_FROM_QEMU,
                                    "operation aborted: migration out job: canceled by client")
            job = g.job
        except _Converged:
            pass
        finally:
            g.job = None
        # complete: the guest now runs on the destination
        moved = Guest(g.name, g.uuid, g.xml, persistent=bool(flags & VIR.VIR_MIGRATE_PERSIST_DEST))
        moved.run(VIR.VIR_DOMAIN_RUNNING_MIGRATED)
        dest.guests[g.name] = moved
        # both ends keep the completed job's statistics (the source only while its domain
        # object exists: a transient source is gone once the guest has moved)
        g.completed_job = moved.completed_job = {
            "type": VIR.VIR_DOMAIN_JOB_COMPLETED, "time_elapsed": 512,
            "downtime": job["downtime"] or 19, "memory_processed": 72351744}
        if flags & VIR.VIR_MIGRATE_UNDEFINE_SOURCE:
            g.persistent = False
        host.power_off(g, VIR.VIR_DOMAIN_SHUTOFF_MIGRATED)
        if host.on_migrate:
            host.on_migrate(g, dest)
        return 0


# ------------------------------------------------------------------------- wiring helpers

def install(monkeypatch, ceph=None, host=None):
    """Make ``import rados``/``rbd``/``libvirt`` give the fakes for this test."""
    import sys
    if ceph is not None:
        monkeypatch.setitem(sys.modules, "rados", ceph.rados)
        monkeypatch.setitem(sys.modules, "rbd", ceph.rbd)
    if host is not None:
        monkeypatch.setitem(sys.modules, "libvirt", host.module)


STUB_HEAD = """#!/bin/sh
{ printf '%%s' "$(basename "$0")"; for a in "$@"; do printf '\\t%%s' "$a"; done; printf '\\n'; } >> '%s'
"""


class StubBin:
    """A directory of stub programs put first on PATH; each records its argv (one line,
    tab-separated) in ``log`` and then runs an optional shell body."""

    def __init__(self, directory, monkeypatch, keep_path=("/usr/bin", "/bin")):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "calls.log")
        open(self.log, "w").close()
        # /usr/sbin (the real crm_* and attrd_updater) is left out on purpose
        monkeypatch.setenv("PATH", ":".join((self.dir,) + tuple(keep_path)))

    def add(self, name, body=""):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(STUB_HEAD % self.log + body + "\n")
        os.chmod(path, 0o755)
        return path

    def calls(self, name=None):
        with open(self.log) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        return [r for r in rows if name is None or r[0] == name]


# RBD disk XML as docs/ceph-facts.md shows it, with a second guarded disk in a namespace and a
# read-only one that is reported but not guarded.
DOMAIN_XML = """<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source protocol='rbd' name='rbd/{name}-root'>
        <host name='10.252.0.1' port='6789'/>
      </source>
      <auth username='vmceph'><secret type='ceph' uuid='0b4f7a4e-3c1f-4c55-9d7e-1a2b3c4d5e6f'/></auth>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/tenant1/{name}-data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='rbd/golden-iso'/>
      <readonly/>
      <target dev='vdc' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def domain_xml(name="vm1", uuid="8a5b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"):
    return DOMAIN_XML.format(name=name, uuid=uuid)


# A stateful attrd_updater: values per (node, name) in a JSON file, as attrd holds them
# cluster-wide; -N picks the node (default: OCF_RESKEY_CRM_meta_on_node, else node1). Queries answer the XML
# of Pacemaker 2.1.5 (seen in the lab): rc 78 "attribute does not exist" when no node has
# the attribute. Dampening (-d) is recorded, not waited for.
ATTRD_PY = r'''
import json, os, sys
store = sys.argv[1]
args = sys.argv[2:]
try:
    with open(store) as f:
        db = json.load(f)
except (OSError, ValueError):
    db = {}
name = node = value = None
op, every = None, False
i = 0
while i < len(args):
    a = args[i]
    if a in ("-n", "-N", "-U", "-B", "-d"):
        v = args[i + 1]
        i += 1
        if a == "-n":
            name = v
        elif a == "-N":
            node = v
        elif a in ("-U", "-B"):
            op, value = "set", v
    elif a == "-D":
        op = "del"
    elif a == "-Q":
        op = "query"
    elif a == "-A":
        every = True
    i += 1
node = node or os.environ.get("OCF_RESKEY_CRM_meta_on_node") or "node1"
values = db.setdefault(name, {})
if op == "set":
    values[node] = value
elif op == "del":
    values.pop(node, None)
elif op == "query":
    # as attrd_updater 2.1.5 does (lab): with OCF_RESKEY_CRM_meta_on_node set, which
    # Pacemaker's execd sets for every agent action, -A answers for that node only
    only = os.environ.get("OCF_RESKEY_CRM_meta_on_node")
    hosts = sorted(h for h in values if not only or h == only) if every else \
        [h for h in values if h == node]
    if not hosts:
        print('<pacemaker-result api-version="2.25"><status code="78" message="Invalid '
              'configuration"/></pacemaker-result>')
        sys.exit(78)
    print('<pacemaker-result api-version="2.25">')
    for h in hosts:
        print('  <attribute name="%s" value="%s" host="%s"/>' % (name, values[h], h))
    print('  <status code="0" message="OK"/>\n</pacemaker-result>')
with open(store, "w") as f:
    json.dump(db, f)
'''


def stateful_attrd(stub_bin, store):
    """attrd_updater on stub_bin, keeping its values in the JSON file ``store``; returns a
    reader: attrs(name) -> {node: value}."""
    script = os.path.join(stub_bin.dir, "attrd.py")
    with open(script, "w") as f:
        f.write(ATTRD_PY)
    stub_bin.add("attrd_updater", 'exec /usr/bin/python3 "%s" "%s" "$@"' % (script, store))

    def attrs(name):
        try:
            with open(store) as f:
                return json.load(f).get(name, {})
        except (OSError, ValueError):
            return {}
    return attrs
