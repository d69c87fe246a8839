"""The Ceph adapter: a bounded librados/librbd session and the facts the agents need.

Boundaries (docs/ceph-facts.md):
- The Python binding ignores ``connect(timeout=)`` and ``mon_command(..., timeout=)``
  (Ceph PR #40932), so every session is bounded through Ceph's own settings, set from what
  is left of the action's deadline: ``client_mount_timeout`` (connect; default 300 s),
  ``rados_mon_op_timeout`` and ``rados_osd_op_timeout`` (default 0 = wait forever). On top,
  ``bounded.call`` stops waiting at the deadline whatever librados does.
- mon_command reports errors as return codes, not exceptions: ``(-110, b'', 'timed out')``,
  ``(-13, b'', 'access denied')``. They become CephUnavailable / CephPermission here.
- Images are opened **read-only** for inspection: a read-only open registers no watch, so
  we never appear as a writer, and ``list_lockers()``/``watchers_list()`` work on it.
  Breaking a lock needs a read-write handle (``lock_break`` raises ReadOnlyImage
  otherwise), opened only for that, after the holder is blocklisted.
- We never take a lock ourselves: ``lock_acquire`` makes QEMU's writes fail with EROFS and an
  advisory lock makes them hang (docs/ceph-facts.md, "Never take a lock yourself").
- ``Rados.shutdown()`` can hang with an op queued for a dead OSD: closing is bounded too.
- A bounded call that timed out keeps running in its abandoned thread (a C call cannot be
  interrupted). It must never see its handles freed under it (use after free: the agent
  may segfault, and a crashed monitor restarts the VM): every ioctx and image is opened and
  closed inside the bounded work function, and once any call was abandoned the Rados
  handle is not shut down but left for the process's exit.

Image inspection, the generation metadata and lock breaking live in vmceph.rbdimages (the
session's methods of the same names delegate to it); when to blocklist and break is
vmceph.fencing's.

``rados`` and ``rbd`` are imported lazily (17-26 ms each) and are injectable for tests.
"""

import json

from vmceph import bounded

# errno values as librados returns them (negative)
ETIMEDOUT = 110
EACCES = 13
EPERM = 1
ENOENT = 2
EINTR = 4


class CephError(Exception):
    """Base of the adapter's errors; ``str()`` is a sentence for an administrator."""


class CephUnavailable(CephError):
    """No monitor quorum, monitors unreachable, or a call that did not finish in time."""


class CephPermission(CephError):
    """The Ceph user's caps do not allow the call."""


class CephConfigError(CephError):
    """The client configuration is unusable: conf or keyring missing, pool missing."""


def split_spec(spec):
    """'pool/image' -> (pool, None, image); 'pool/ns/image' -> (pool, ns, image)."""
    parts = spec.split("/")
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    raise ValueError("not an RBD image spec (pool/image or pool/namespace/image): %r" % spec)


class CephSession:
    """One connection to the cluster, bounded by a deadline. Use as a context manager."""

    # Caps per call: a healthy monitor answers in milliseconds, an OSD op in well under a
    # second; when they do not, the answer "unavailable" is more useful early than late.
    MON_OP_CAP = 10.0
    OSD_OP_CAP = 15.0
    MOUNT_CAP = 30.0

    def __init__(self, conffile, user=None, keyring=None, deadline=None, log=None,
                 rados_mod=None, rbd_mod=None):
        self.conffile = conffile
        self.user = user or None
        self.keyring = keyring or None
        self.deadline = deadline
        self.log = log
        self._rados_mod = rados_mod
        self._rbd_mod = rbd_mod
        self.cluster = None
        self.abandoned = []             # what timed out and may still run on the handle
        self._images = None             # vmceph.rbdimages.Images, made at the first use

    # -------------------------------------------------------------- modules and budget
    @property
    def rados(self):
        if self._rados_mod is None:
            import rados
            self._rados_mod = rados
        return self._rados_mod

    @property
    def rbd(self):
        if self._rbd_mod is None:
            import rbd
            self._rbd_mod = rbd
        return self._rbd_mod

    def _left(self, cap):
        if self.deadline is None:
            return cap
        left = self.deadline.remaining()
        if left <= 0.2:
            raise CephUnavailable("no time left in this action for a Ceph call")
        return min(cap, left)

    def _debug(self, msg, *args):
        if self.log is not None:
            self.log.debug(msg, *args)

    # -------------------------------------------------------------- connection
    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def connect(self):
        mount = self._left(self.MOUNT_CAP)
        conf = {
            "client_mount_timeout": "%d" % max(1, int(mount)),
            "rados_mon_op_timeout": "%d" % max(1, int(self._left(self.MON_OP_CAP))),
            "rados_osd_op_timeout": "%d" % max(1, int(self._left(self.OSD_OP_CAP))),
            # An op sent to an OSD that has just died waits until this client learns the
            # osdmap that marks it down; librados asks for a new map only once an op is
            # "laggy" (objecter_timeout, 10 s, checked every objecter_tick_interval, 5 s).
            # After a node crash every image inspection of the recovery then took 15 s
            # instead of ~2 s after the monitors' new quorum (measured on the lab).
            "objecter_tick_interval": "0.5",
            "objecter_timeout": "1",
            # an agent must never wait on the admin socket or log to files of its own
            "admin_socket": "",
            "log_to_stderr": "false",
            "err_to_stderr": "false",
        }
        if self.keyring:
            conf["keyring"] = self.keyring
        rados = self.rados
        try:
            # bounded too: librados reads the file in the constructor, and a FIFO or a hung
            # mount there blocks it for good (lab, issue 16's hostile stop: a stop that
            # opened a session with ceph_conf=<a FIFO> waited out its whole timeout)
            cluster = bounded.call(lambda: rados.Rados(conffile=self.conffile,
                                                       rados_id=self.user, conf=conf),
                                   min(mount, 5.0) + 1.0, "reading " + str(self.conffile))
        except bounded.Timeout as e:
            raise CephConfigError("cannot read Ceph configuration %s: %s"
                                  % (self.conffile, e)) from None
        except rados.ObjectNotFound:
            raise CephConfigError("Ceph configuration %s not found" % self.conffile) from None
        except rados.Error as e:
            raise CephConfigError("cannot read Ceph configuration %s: %s"
                                  % (self.conffile, e)) from None
        self._debug("connecting to Ceph (%s, user %s, mount timeout %s s)",
                    self.conffile, self.user or "admin", conf["client_mount_timeout"])
        try:
            bounded.call(cluster.connect, mount + 1.0, "Ceph connect")
        except bounded.Timeout:
            raise CephUnavailable("no Ceph monitor answered within %.0f s (no quorum, or "
                                  "monitors unreachable from this node)" % mount) from None
        except rados.TimedOut:
            raise CephUnavailable("no Ceph monitor quorum reachable within %.0f s (connect "
                                  "timed out)" % mount) from None
        except (rados.PermissionDeniedError, rados.PermissionError):
            raise CephPermission("Ceph refused the credentials of client.%s (check "
                                 "ceph_user/ceph_keyring)" % (self.user or "admin")) from None
        except rados.ObjectNotFound:
            raise CephConfigError("keyring for client.%s not found (set ceph_keyring)"
                                  % (self.user or "admin")) from None
        except rados.Error as e:
            raise CephUnavailable("cannot connect to Ceph: %s" % e) from None
        self.cluster = cluster

    def _bounded(self, fn, timeout, what):
        """bounded.call on the session's handle; a timeout is remembered (see close)."""
        try:
            return bounded.call(fn, timeout, what)
        except bounded.Timeout:
            self.abandoned.append(what)
            raise

    def close(self):
        cluster, self.cluster = self.cluster, None
        if cluster is None:
            return
        if self.abandoned:
            # A call still runs on this handle in an abandoned thread: shutting it down
            # would free what that call uses. The process ends with the action anyway.
            self._debug("leaving the Ceph handle open for the process's exit: %s did not "
                        "finish", ", ".join(self.abandoned))
            return
        try:
            bounded.call(cluster.shutdown, 3.0, "Ceph shutdown")
        except bounded.Timeout:
            self._debug("librados shutdown did not finish in 3 s; abandoning it")
        except Exception as e:  # closing must never mask the action's result
            self._debug("librados shutdown: %s", e)

    # -------------------------------------------------------------- monitor commands
    def mon(self, prefix, **args):
        """JSON answer of a monitor command; raises on error codes."""
        return self._command("mon", prefix, args)

    def mgr(self, prefix, **args):
        """JSON answer of a manager command; raises on error codes."""
        return self._command("mgr", prefix, args)

    def mon_target(self, name, prefix, **args):
        """JSON answer of a command to the one monitor ``name`` (``ceph tell mon.NAME``,
        e.g. 'sessions', which fence.py needs); raises like mon()."""
        label = "mon.%s" % name
        return self._send(lambda cmd: self.cluster.mon_command(cmd, b"", target=name),
                          prefix, args, "Ceph " + label, label, label)

    def _command(self, target, prefix, args):
        send = self.cluster.mon_command if target == "mon" else self.cluster.mgr_command
        who = "monitors" if target == "mon" else "manager"
        return self._send(lambda cmd: send(cmd, b""), prefix, args, "Ceph " + target,
                          "Ceph " + who, "Ceph " + target)

    def _send(self, send, prefix, args, what, silent, failed):
        """One bounded command through ``send(json)``; ``what`` names it for the bound,
        ``silent`` / ``failed`` start the reasons of a timeout / a librados error."""
        args.update(prefix=prefix, format="json")
        cmd = json.dumps(args)
        budget = self._left(self.MON_OP_CAP) + 1.0
        try:
            ret, out, err = self._bounded(lambda: send(cmd), budget,
                                          "%s '%s'" % (what, prefix))
        except bounded.Timeout:
            raise CephUnavailable("%s did not answer '%s' within %.0f s"
                                  % (silent, prefix, budget)) from None
        except self.rados.Error as e:
            raise CephUnavailable("%s '%s' failed: %s" % (failed, prefix, e)) from None
        return self._answer(prefix, ret, out, err)

    @staticmethod
    def _answer(prefix, ret, out, err):
        if ret == -ETIMEDOUT:
            raise CephUnavailable("Ceph '%s' timed out (no monitor quorum?)" % prefix)
        if ret in (-EACCES, -EPERM):
            raise CephPermission("Ceph refused '%s': %s" % (prefix, err or "access denied"))
        if ret != 0:
            raise CephUnavailable("Ceph '%s' failed (%d): %s" % (prefix, ret, err))
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            # 'osd blocklist ls' prints two JSON arrays back to back (docs/ceph-facts.md)
            return out.decode("utf-8", "replace") if isinstance(out, bytes) else out

    def quorum(self):
        """(ok, detail, quorum_names, all mon names). Checked explicitly: an already
        connected client's health stays HEALTH_OK after quorum is lost (docs/ceph-facts.md)."""
        import time
        t0 = time.monotonic()
        try:
            q = self.mon("quorum_status")
        except CephUnavailable as e:
            return False, "%s (after %.1f s)" % (e, time.monotonic() - t0), [], []
        names = list(q.get("quorum_names") or [])
        mons = [m.get("name") for m in (q.get("monmap") or {}).get("mons", [])]
        if not mons or len(names) * 2 <= len(mons):
            return False, "monitor quorum lost: %d of %d monitors in quorum (%s)" % (
                len(names), len(mons), ",".join(names) or "none"), names, mons
        return True, "quorum %s of %s" % (",".join(names), ",".join(mons)), names, mons

    def health(self):
        """{'status': 'HEALTH_OK'|..., 'checks': {CODE: {'severity', 'summary', 'count',
        'detail'}}}: ``detail`` the check's detail lines (``health detail``), e.g. for
        PG_AVAILABILITY 'pg 2.1 is stuck inactive for 62s, current state unknown, last
        acting []' (one per PG, at most mon_health_max_detail of them), ``count`` the
        summary's count (the number of PGs, all of them)."""
        h = self.mon("health", detail="detail") or {}
        checks = {}
        for code, c in (h.get("checks") or {}).items():
            summary, count = c.get("summary"), None
            if isinstance(summary, dict):
                summary, count = summary.get("message"), summary.get("count")
            detail = [d.get("message") if isinstance(d, dict) else d
                      for d in (c.get("detail") or [])]
            checks[code] = {"severity": c.get("severity"), "summary": summary,
                            "count": count, "detail": [d for d in detail if d]}
        return {"status": h.get("status", "HEALTH_UNKNOWN"), "checks": checks}

    def pool_ids(self):
        """{pool name: pool id} from the monitors ('osd lspools'; mon 'profile rbd' may
        ask it): the pool id is the part of a PG id before the dot."""
        out = self.mon("osd lspools") or []
        return {p.get("poolname"): p.get("poolnum") for p in out
                if isinstance(p, dict) and p.get("poolname") is not None}

    def client_addrs(self):
        """Addresses this client is seen at by the cluster, e.g. ['10.252.0.1']."""
        from vmceph.safety import ip_of
        raw = self.cluster.get_addrs()
        text = raw if isinstance(raw, str) else str(raw)
        parts = [p for p in text.strip("[]").split(",") if p]
        return sorted({ip_of(p) for p in parts if ip_of(p) not in ("", "0.0.0.0", "::")})

    # -------------------------------------------------------------- images
    @property
    def images(self):
        """The image operations of this session (vmceph.rbdimages.Images)."""
        if self._images is None:
            from vmceph.rbdimages import Images
            self._images = Images(self)
        return self._images

    def inspect(self, spec):
        """ImageFacts of one image (Images.inspect)."""
        return self.images.inspect(spec)

    def inspect_all(self, specs):
        """ImageFacts of every image, inspected concurrently (Images.inspect_all)."""
        return self.images.inspect_all(specs)

    def watchers_answer(self, spec, timeout_s):
        """Whether every watcher of ``spec`` acknowledges a notification (Images.
        watchers_answer): True, False, or None when it could not be asked."""
        return self.images.watchers_answer(spec, timeout_s)

    def image_meta_get(self, spec, key):
        """Image metadata ``key`` of ``spec``, None if unset (Images.meta_get)."""
        return self.images.meta_get(spec, key)

    def image_meta_set(self, spec, key, value):
        """Set image metadata without a watch or a lock (Images.meta_set)."""
        self.images.meta_set(spec, key, value)

    def break_lock(self, spec, locker):
        """Break the lock ``locker`` holds on ``spec``; True if one was broken
        (Images.break_lock; the caller has blocklisted the holder)."""
        return self.images.break_lock(spec, locker)

    def blocklist_add(self, addr, expire_s):
        """Fence one client instance ('ip:port/nonce', nonce > 0) for ``expire_s`` seconds.
        'ip:0/0' (or a bare IP) would fence every client of that host: refused."""
        from vmceph.safety import instance_addr
        if not instance_addr(addr):
            raise ValueError("refusing to blocklist %r: not one client instance "
                             "(ip:port/nonce with nonce > 0)" % addr)
        self._blocklist_add(addr, expire_s)

    def blocklist_host(self, ip, expire_s):
        """Fence every client instance on ``ip`` (the entry 'IP:0/0': fence_vmceph's off)
        for ``expire_s`` seconds; the node's own daemons are not clients of that kind.
        Only for a fence agent: the resource agents fence instances (blocklist_add)."""
        from vmceph.safety import host_entry
        self._blocklist_add(host_entry(ip), expire_s)

    def _blocklist_add(self, addr, expire_s):
        # librados' own call (rados_blocklist_add, python3-rados 16.2: blocklist_add(addr,
        # expire_seconds: int)) sends the same 'osd blocklist add' to the monitors, under
        # this session's rados_mon_op_timeout, then waits for the newest OSD map. Its
        # expiry is whole seconds and 0 means the monitors' default (an hour): never 0.
        import math
        expire = max(1, math.ceil(float(expire_s)))
        budget = self._left(self.MON_OP_CAP) + 1.0
        rados = self.rados
        try:
            self._bounded(lambda: self.cluster.blocklist_add(addr, expire), budget,
                          "Ceph blocklist add %s" % addr)
        except bounded.Timeout:
            raise CephUnavailable("Ceph monitors did not answer 'osd blocklist add %s' within "
                                  "%.0f s" % (addr, budget)) from None
        except (rados.PermissionError, rados.PermissionDeniedError) as e:
            raise CephPermission("Ceph refused 'osd blocklist add %s': %s (the Ceph user needs "
                                 "mon 'profile rbd')" % (addr, e)) from None
        except rados.TimedOut as e:
            raise CephUnavailable("Ceph 'osd blocklist add %s' timed out (no monitor "
                                  "quorum?): %s" % (addr, e)) from None
        except rados.Error as e:
            raise CephUnavailable("Ceph 'osd blocklist add %s' failed: %s" % (addr, e)) from None

    # librados answers in a few ms when the monitors are up (it asks them for the newest
    # map and waits until it has it); bounded like a monitor command.
    def wait_for_latest_osdmap(self):
        """Wait until this client has the newest OSD map (the one carrying the blocklist
        entries just added): librbd's own lock break does this between blocklisting and
        breaking. Returns the seconds it took; CephUnavailable when it does not finish
        within the monitor cap or the action's deadline."""
        import time
        budget = self._left(self.MON_OP_CAP)
        t0 = time.monotonic()
        try:
            self._bounded(self.cluster.wait_for_latest_osdmap, budget,
                          "wait for the latest OSD map")
        except bounded.Timeout:
            raise CephUnavailable("this client did not get the newest OSD map (the one "
                                  "carrying the blocklist entries) within %.0f s: no lock "
                                  "broken" % budget) from None
        except self.rados.Error as e:
            raise CephUnavailable("waiting for the newest OSD map failed: %s" % e) from None
        return time.monotonic() - t0

    def blocklist_ls(self):
        """Entries as 'ip:port/nonce' strings. The command is 'osd blocklist ls': the
        'osd blocklist' command with blocklistop 'ls' is refused by a real 16.2.15 monitor
        (-22, "unable to parse address"), which the unit fakes did not model."""
        return parse_blocklist(self.mon("osd blocklist ls"))[0]


def parse_blocklist(out):
    """(entries, ranges) of 'osd blocklist ls' in JSON: two arrays back to back,
    ``[{"addr": "10.0.0.3:0/0", "until": ...}][{"range": "10.9.9.9:0/32", ...}]``
    (16.2.15; json.loads fails on it), or one array (older releases)."""
    if isinstance(out, list):
        return [e.get("addr") for e in out if isinstance(e, dict) and e.get("addr")], []
    text = (out or "").strip()
    dec = json.JSONDecoder()
    arrays, i = [], 0
    while i < len(text):
        obj, i = dec.raw_decode(text, i)
        arrays.append(obj if isinstance(obj, list) else [])
        while i < len(text) and text[i].isspace():
            i += 1
    entries = [e.get("addr") for e in (arrays[0] if arrays else []) if isinstance(e, dict)]
    ranges = [e.get("range") for e in (arrays[1] if len(arrays) > 1 else [])
              if isinstance(e, dict)]
    return [e for e in entries if e], [r for r in ranges if r]
