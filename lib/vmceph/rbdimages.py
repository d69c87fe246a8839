"""The image side of a Ceph session: inspection (who holds the exclusive lock, who
watches), the generation metadata, and breaking a lock (vmceph.fencing decides when).

``Images`` works through its CephSession's handle, caps and deadline (CephSession.images;
the session's inspect, inspect_all, image_meta_get, image_meta_set and break_lock delegate
here). The rules of the module docstring of vmceph.ceph hold: every ioctx and image is
opened and closed inside the bounded work function, so that a call abandoned at its
deadline never sees its handles freed under it; images are opened read-only except to
break a lock.
"""

import contextlib

from vmceph import bounded
from vmceph.ceph import CephConfigError, CephPermission, CephUnavailable, split_spec
from vmceph.safety import ImageFacts, Locker, Watcher


class Images:
    """Image operations through ``session`` (a connected CephSession)."""

    def __init__(self, session):
        self.session = session

    # -------------------------------------------------------------- handles
    def _open_ioctx(self, pool, ns):
        """Open an ioctx; called inside the bounded work functions only (see the module
        docstring: the abandoned thread owns what it opened and closes it itself)."""
        s = self.session
        rados = s.rados
        try:
            ioctx = s.cluster.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise CephConfigError("Ceph pool %s does not exist" % pool) from None
        except (rados.PermissionDeniedError, rados.PermissionError):
            raise CephPermission("client.%s may not open pool %s" % (s.user or "admin", pool))
        if ns:
            ioctx.set_namespace(ns)
        return ioctx

    @contextlib.contextmanager
    def ioctx(self, pool, ns):
        """The ioctx of ``pool``/``ns``, closed on leaving, whatever happens inside."""
        ioctx = self._open_ioctx(pool, ns)
        try:
            yield ioctx
        finally:
            ioctx.close()

    @contextlib.contextmanager
    def read_only(self, pool, ns, name):
        """The image opened read-only (no watch: never seen as a writer), and its ioctx,
        both closed on leaving, also when the open or the body fails."""
        with self.ioctx(pool, ns) as ioctx:
            with self.session.rbd.Image(ioctx, name, read_only=True) as img:
                yield img

    # -------------------------------------------------------------- inspection
    def inspect(self, spec):
        """ImageFacts of one image: who holds its exclusive lock, who watches it."""
        s = self.session
        pool, ns, name = split_spec(spec)
        rbd, rados = s.rbd, s.rados

        def work():
            with self.read_only(pool, ns, name) as img:
                lk = img.list_lockers()
                ws = list(img.watchers_list())
            return lk, ws
        try:
            lk, ws = s._bounded(work, s._left(s.OSD_OP_CAP) + 1.0, "inspect " + spec)
        except CephConfigError as e:
            return ImageFacts(spec, exists=False, error=str(e))
        except CephPermission:
            return ImageFacts(spec, permission_denied=True)
        except rbd.ImageNotFound:
            return ImageFacts(spec, exists=False)
        except (rbd.PermissionError, rados.PermissionDeniedError, rados.PermissionError):
            return ImageFacts(spec, permission_denied=True)
        except bounded.Timeout as e:
            return ImageFacts(spec, error=str(e))
        except CephUnavailable as e:
            return ImageFacts(spec, error=str(e))
        except (rbd.Error, rados.Error) as e:
            return ImageFacts(spec, error="%s: %s" % (type(e).__name__, e))
        return image_facts(spec, lk, ws)

    def inspect_all(self, specs):
        """inspect() of every image at once: librados is thread-safe, and each inspection
        is a few round trips to the OSDs (5-7 ms per image here, sequentially)."""
        s = self.session
        jobs = [bounded.Background(lambda x=x: self.inspect(x), "inspect " + x) for x in specs]
        out = []
        for spec, job in zip(specs, jobs):
            try:
                out.append(job.result(s._left(s.OSD_OP_CAP) + 2.0))
            except bounded.Timeout as e:
                s.abandoned.append("inspect " + spec)
                out.append(ImageFacts(spec, error=str(e)))
            except CephUnavailable as e:
                out.append(ImageFacts(spec, error=str(e)))
        return out

    def watchers_answer(self, spec, timeout_s):
        """True if every watcher of ``spec`` acknowledged a header-update notification
        within ``timeout_s``, False if one did not, None if it could not be asked.

        The notification is the one ``rbd`` itself sends after changing an image's header
        (an empty payload, librbd's legacy header update): a live librbd client, a paused
        or incoming QEMU among them, refreshes its header and acknowledges it from its own
        threads within milliseconds; a dead client's watch, kept by the OSDs until
        osd_client_watch_timeout, acknowledges nothing, and rados_notify2 answers
        -ETIMEDOUT. No watch and no lock of our own: the notify is sent through the
        ioctx. An acknowledgement proves a client alive; silence proves nothing (a live
        one cut off from the OSDs is silent too), so it only ever ends a wait early."""
        s = self.session
        pool, ns, name = split_spec(spec)
        rbd, rados = s.rbd, s.rados
        ms = max(100, int(timeout_s * 1000))

        def work():
            with self.ioctx(pool, ns) as ioctx:
                with rbd.Image(ioctx, name, read_only=True) as img:
                    header = "rbd_header." + img.id()
                try:
                    return ioctx.notify(header, "", ms)
                except rados.TimedOut:
                    return False
        try:
            return bool(s._bounded(work, min(s._left(s.OSD_OP_CAP), timeout_s + 2.0),
                                   "notify the watchers of " + spec))
        except (bounded.Timeout, CephUnavailable, CephConfigError, CephPermission,
                rbd.Error, rados.Error):
            return None

    # ------------------------------------------------------------ image metadata
    def meta_get(self, spec, key):
        """Value (str) of the image metadata ``key`` of ``spec`` (``rbd image-meta get``),
        None if the image has no such key. Read through a read-only handle: no watch."""
        pool, ns, name = split_spec(spec)

        def work():  # ioctx and image opened and closed by the bounded work itself
            with self.read_only(pool, ns, name) as img:
                try:
                    return img.metadata_get(key)
                except KeyError:
                    return None
        return self._meta_call(work, "image-meta get %s %s" % (spec, key))

    def meta_set(self, spec, key, value):
        """Set the image metadata ``key`` of ``spec`` to ``value``, as ``rbd image-meta set``
        stores it (omap key ``metadata_<key>`` of the image's header object), written with
        librados directly.

        Not through ``Image.metadata_set``: that needs a read-write handle, and a read-write
        open registers a watch, so for its duration this agent is a second writer to any
        starter that looks (a racing start, our own post-create check), and with the
        exclusive-lock feature librbd may take the lock for the update (docs/ceph-facts.md: never
        take a lock yourself). The omap write registers no watch and takes no lock; the lab
        showed ``rbd image-meta get`` reading it back, with a ``profile rbd`` user."""
        pool, ns, name = split_spec(spec)
        rbd, rados = self.session.rbd, self.session.rados
        data = value.encode("utf-8") if isinstance(value, str) else value

        def work():
            with self.ioctx(pool, ns) as ioctx:
                with rbd.Image(ioctx, name, read_only=True) as img:
                    header = "rbd_header." + img.id()
                with rados.WriteOpCtx() as op:
                    ioctx.set_omap(op, ("metadata_" + key,), (data,))
                    ioctx.operate_write_op(op, header)
        self._meta_call(work, "image-meta set %s %s" % (spec, key))

    def _meta_call(self, work, what):
        s = self.session
        rbd, rados = s.rbd, s.rados
        try:
            return s._bounded(work, s._left(s.OSD_OP_CAP) + 1.0, what)
        except bounded.Timeout as e:
            raise CephUnavailable(str(e)) from None
        except (rbd.PermissionError, rados.PermissionDeniedError, rados.PermissionError):
            raise CephPermission("client.%s may not %s" % (s.user or "admin", what)) from None
        except rbd.ImageNotFound:
            raise CephConfigError("%s: the image does not exist" % what) from None
        except (rbd.Error, rados.Error) as e:
            raise CephUnavailable("%s failed: %s" % (what, e)) from None

    # ------------------------------------------------------------ lock break
    def break_lock(self, spec, locker):
        """Break the exclusive lock ``locker`` holds on ``spec``; the caller has blocklisted
        the holder already. Returns True if a lock was broken, False if it was gone.

        librbd's own blocklisting on break (``rbd_blocklist_on_break_lock``) is switched
        off: the holder is on the blocklist already, and a second blocklist change is a
        second monitor (Paxos) round, ~1 s here (start took 1.98 s with it, 0.96 s
        without). Its expiry setting cannot be used instead: with
        ``rbd_blocklist_expire_seconds=600`` lock_break fails with EINVAL (librbd 16.2.15,
        lab), with the default it blocklists for the monitors' 3600 s.
        """
        s = self.session
        pool, ns, name = split_spec(spec)
        rbd = s.rbd
        s.cluster.conf_set("rbd_blocklist_on_break_lock", "false")

        def work():
            with self.ioctx(pool, ns) as ioctx:
                # read-write handle: lock_get_owners()/lock_break() fail on a read-only one
                with rbd.Image(ioctx, name) as img:
                    owners = list(img.lock_get_owners())
                    s._debug("lock owners of %s: %s", spec, owners)
                    broken = False
                    for o in owners:
                        # Pacific names the owner by its address: [{'mode': 0, 'owner':
                        # '10.180.0.2:0/2022063107'}] (lab, librbd 16.2.15), not by entity
                        if o.get("owner") in (locker.addr, locker.entity):
                            img.lock_break(o["mode"], o["owner"])
                            broken = True
                    return broken
        try:
            return s._bounded(work, s._left(s.OSD_OP_CAP) + 1.0, "lock_break " + spec)
        except bounded.Timeout as e:
            raise CephUnavailable(str(e)) from None
        except (rbd.PermissionError, s.rados.PermissionDeniedError):
            raise CephPermission("client.%s may not break the lock on %s"
                                 % (s.user or "admin", spec)) from None
        except rbd.ImageNotFound:
            return False
        except (rbd.Error, s.rados.Error) as e:
            raise CephUnavailable("lock_break on %s failed: %s" % (spec, e)) from None


def image_facts(spec, lockers_answer, watchers):
    """Build ImageFacts from librbd's raw answers.

    list_lockers(): [] when unlocked, else
        {'tag': 'internal', 'exclusive': True,
         'lockers': [('client.4235', 'auto 94823928102912', '10.252.0.1:0/3154213287')]}
    watchers_list(): [{'addr': '10.252.0.1:0/3154213287', 'id': 4235, 'cookie': 94823928102912}]
    """
    lockers, tag = (), None
    if lockers_answer:
        tag = lockers_answer.get("tag")
        lockers = tuple(Locker(str(c), str(k), str(a))
                        for c, k, a in lockers_answer.get("lockers", []))
    ws = tuple(Watcher(str(w["addr"]), int(w.get("id", 0)), int(w.get("cookie", 0)))
               for w in watchers)
    return ImageFacts(spec, lock_tag=tag, lockers=lockers, watchers=ws)
