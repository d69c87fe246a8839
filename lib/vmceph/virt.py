"""The libvirt adapter: connection, domain state, start, shutdown/destroy, live migration.

libvirt errors become our own exceptions here, classified by error code *and* domain:
a ``VIR_FROM_REMOTE``/``VIR_FROM_RPC`` error or a failed connect means "libvirtd cannot be
reached", never "the domain is gone"; only ``VIR_ERR_NO_DOMAIN`` means the domain does not
exist. Every call is bounded by the action's deadline (``bounded.call``): libvirt-python has
no per-call timeout.

This module is on the monitor hot path: it imports only ``libvirt`` (lazily) and the
standard library pieces it needs.
"""

import os
import time

from vmceph import bounded

# virDomainState
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
STATE_NAMES = {NOSTATE: "no state", RUNNING: "running", BLOCKED: "blocked", PAUSED: "paused",
               SHUTDOWN: "shutting down", SHUTOFF: "shut off", CRASHED: "crashed",
               PMSUSPENDED: "suspended by guest power management"}
# paused reasons (virDomainPausedReason)
PAUSED_IOERROR = 5
PAUSED_USER = 1            # what a domain created with START_PAUSED reports (lab: "paused (user)")
PAUSED_MIGRATION = 2       # VIR_DOMAIN_PAUSED_MIGRATION: a migration's incoming domain on the
#                            target (libvirt starts it paused with this reason), or a source
#                            paused at the end of its migration
ACTIVE_STATES = (RUNNING, BLOCKED, PAUSED, SHUTDOWN, PMSUSPENDED)
# A domain libvirt keeps as CRASHED (on_crash='preserve') still has its QEMU and its images
# open: it is not "running" for the monitor, but it is not gone either (stop destroys it).
LIVE_STATES = ACTIVE_STATES + (CRASHED,)

# flags and typed-parameter names of libvirt (libvirt-domain.h), so that callers need not
# import the binding: a unit test checks them against libvirt-python's values
START_PAUSED = 1                  # VIR_DOMAIN_START_PAUSED
SAVE_PAUSED = 4                   # VIR_DOMAIN_SAVE_PAUSED
XML_SECURE, XML_INACTIVE = 1, 2   # VIR_DOMAIN_XML_*
JOB_STATS_COMPLETED, JOB_STATS_KEEP_COMPLETED = 1, 2
JOB_NONE = 0                      # VIR_DOMAIN_JOB_NONE
DESTROY_GRACEFUL = 1
MIGRATE_PARAM_URI = "migrate_uri"
MIGRATE_PARAM_BANDWIDTH = "bandwidth"

# virErrorNumber / virErrorDomain values we classify on (libvirt's virterror.h)
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_NO_CONNECT = 5
VIR_ERR_SYSTEM_ERROR = 38
VIR_ERR_RPC = 39
VIR_ERR_AUTH_FAILED = 45
VIR_ERR_OPERATION_TIMEOUT = 68
VIR_ERR_NO_STORAGE_POOL = 49
VIR_FROM_REMOTE = 13
VIR_FROM_RPC = 7


class VirtError(Exception):
    pass


class LibvirtUnreachable(VirtError):
    """libvirtd could not be asked: the domain's state is unknown, not 'stopped'."""


class CallTimeout(LibvirtUnreachable):
    """A call libvirt did not answer within its bound: abandoned, it may still be running in
    libvirtd (a save, a create), which an error reply never is."""


class DomainNotFound(VirtError):
    pass


class VirtOperationFailed(VirtError):
    pass


class PoolNotFound(VirtError):
    """No storage pool of that name is defined on this host."""


def _libvirt():
    import libvirt
    return libvirt


def classify(err, what):
    """Our exception for a libvirtError raised by ``what``."""
    return classify_codes(err.get_error_code(), err.get_error_domain(),
                          err.get_error_message() or str(err), what)


def classify_codes(code, domain, msg, what):
    if code == VIR_ERR_NO_DOMAIN:
        return DomainNotFound("%s: %s" % (what, msg))
    if code == VIR_ERR_NO_STORAGE_POOL:
        return PoolNotFound("%s: %s" % (what, msg))
    if domain in (VIR_FROM_REMOTE, VIR_FROM_RPC) or code in (
            VIR_ERR_NO_CONNECT, VIR_ERR_RPC, VIR_ERR_SYSTEM_ERROR, VIR_ERR_AUTH_FAILED,
            VIR_ERR_OPERATION_TIMEOUT):
        return LibvirtUnreachable("%s: %s" % (what, msg))
    return VirtOperationFailed("%s: %s" % (what, msg))


class Hypervisor:
    """One libvirt connection for one action."""

    def __init__(self, uri, deadline, log=None, libvirt_mod=None):
        self.uri = uri
        self.deadline = deadline
        self.log = log
        self._mod = libvirt_mod
        self.conn = None

    @property
    def mod(self):
        if self._mod is None:
            self._mod = _libvirt()
        return self._mod

    def _call(self, fn, what, cap=30.0):
        budget = self.deadline.at_most(cap)
        try:
            return bounded.call(fn, budget, what)
        except bounded.Timeout:
            raise CallTimeout("libvirt did not answer %s within %.1f s" % (what, budget))
        except self.mod.libvirtError as e:
            raise classify(e, what) from None

    def open(self):
        if self.conn is None:
            mod = self.mod
            # libvirt prints every error to stderr by default; we report them ourselves.
            # One module-level function, never a new lambda per connection: registering
            # drops libvirt-python's reference to the previous handler, which an abandoned
            # call reporting an error in another thread may be running at that moment.
            mod.registerErrorHandler(_quiet, None)
            self.conn = self._call(lambda: mod.open(self.uri), "connect to %s" % self.uri,
                                   cap=15.0)
        return self.conn

    def close(self):
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                bounded.call(conn.close, 2.0, "close")
            except Exception:
                pass

    def lookup(self, name=None, uuid=None):
        conn = self.open()
        if uuid:
            try:
                return self._call(lambda: conn.lookupByUUIDString(uuid), "lookup " + uuid)
            except DomainNotFound:
                if not name:
                    raise
        return self._call(lambda: conn.lookupByName(name), "lookup " + str(name))

    def state(self, name=None, uuid=None):
        """(state, reason) of the domain, (SHUTOFF, 0) if libvirt does not know it."""
        try:
            dom = self.lookup(name, uuid)
        except DomainNotFound:
            return SHUTOFF, 0
        try:
            st = self._call(dom.state, "state of " + str(name or uuid))
        except DomainNotFound:
            return SHUTOFF, 0
        return st[0], st[1]

    def create(self, xml, paused=False, cap=120.0):
        """Start a transient domain from ``xml``; with ``paused`` its vCPUs do not run until
        resume(). QEMU opens its disks before createXML returns, paused or not (lab: a
        paused QEMU's RBD client is a watcher of the image at once), which is what lets
        a start verify that it is the only writer before the guest can write."""
        conn = self.open()
        flags = START_PAUSED if paused else 0
        return self._call(lambda: conn.createXML(xml, flags), "create domain", cap=cap)

    def restore(self, path, paused=False, cap=120.0):
        """Restore a domain saved to ``path`` (kept paused with ``paused``)."""
        conn = self.open()
        flags = SAVE_PAUSED if paused else 0
        self._call(lambda: conn.restoreFlags(path, None, flags), "restore " + path, cap=cap)

    def save(self, dom, path, cap):
        """Save the domain's memory to ``path`` and stop it."""
        self._call(lambda: dom.save(path), "save to " + path, cap=cap)

    def is_persistent(self, dom, cap=5.0):
        """True if the domain has a persistent definition. A transient domain is listed
        only while it runs or while libvirt starts it: shut off and transient means being
        created right now (vmceph.createmark)."""
        return bool(self._call(dom.isPersistent, "isPersistent", cap=cap))

    def resume(self, dom):
        self._call(dom.resume, "resume")

    def state_of(self, dom, cap=30.0):
        """(state, reason) of a domain handle, (SHUTOFF, 0) once libvirt no longer knows it."""
        try:
            st = self._call(dom.state, "state", cap=cap)
        except DomainNotFound:
            return SHUTOFF, 0
        return st[0], st[1]

    def job_stats(self, dom, completed=False, cap=5.0):
        """The current (or, with ``completed``, the last completed) job's statistics; {}
        when there is no such job (libvirt answers {'type': JOB_NONE} then)."""
        flags = (JOB_STATS_COMPLETED | JOB_STATS_KEEP_COMPLETED) if completed else 0
        stats = self._call(lambda: dom.jobStats(flags), "jobStats", cap=cap)
        if not stats or stats.get("type", JOB_NONE) == JOB_NONE:
            return {}
        return stats

    def abort_job(self, dom, cap=10.0):
        self._call(dom.abortJob, "abortJob", cap=cap)

    def suspend(self, dom, cap=5.0):
        self._call(dom.suspend, "suspend", cap=cap)

    def start_postcopy(self, dom, cap=5.0):
        """Switch a running migration job (started with VIR_MIGRATE_POSTCOPY) to
        post-copy: the guest runs on the target from now on, its memory follows."""
        self._call(lambda: dom.migrateStartPostCopy(0), "migrateStartPostCopy", cap=cap)

    def set_max_downtime(self, dom, ms, cap=5.0):
        self._call(lambda: dom.migrateSetMaxDowntime(int(ms), 0), "migrateSetMaxDowntime",
                   cap=cap)

    def ensure_network(self, name):
        """Start libvirt network ``name`` if it is not active; True if it was started."""
        conn = self.open()
        net = self._call(lambda: conn.networkLookupByName(name), "network " + name)
        if self._call(net.isActive, "network active"):
            return False
        self._call(net.create, "start network " + name)
        return True

    def ensure_pool(self, name):
        """Start libvirt storage pool ``name`` if it is not active; True if it was started."""
        conn = self.open()
        pool = self._call(lambda: conn.storagePoolLookupByName(name), "pool " + name)
        if self._call(pool.isActive, "pool active"):
            return False
        self._call(lambda: pool.create(0), "start pool " + name)
        return True

    def undefine_if_inactive(self, name):
        """A persistent, inactive definition of the same name would be started by libvirt's
        autostart or by a person's 'virsh start': remove it (ocf:heartbeat:VirtualDomain
        does the same). Returns True if one was removed."""
        try:
            dom = self.lookup(name)
        except DomainNotFound:
            return False
        active = self._call(dom.isActive, "isActive")
        persistent = self._call(dom.isPersistent, "isPersistent")
        if persistent and not active:
            self._call(dom.undefine, "undefine " + name)
            return True
        return False

    def shutdown(self, dom, flags=0):
        self._call(lambda: dom.shutdownFlags(flags), "shutdown")

    def destroy(self, dom, graceful=False):
        flags = DESTROY_GRACEFUL if graceful else 0
        self._call(lambda: dom.destroyFlags(flags), "destroy")

    def xml_desc(self, dom, secure=False, inactive=False, cap=30.0):
        flags = (XML_SECURE if secure else 0) | (XML_INACTIVE if inactive else 0)
        return self._call(lambda: dom.XMLDesc(flags), "XMLDesc", cap=cap)

    def pool_xml(self, name):
        """XML of the storage pool ``name``, defined on this host, active or not (what a
        ``type='volume'`` disk refers to). Raises PoolNotFound, LibvirtUnreachable,
        VirtOperationFailed."""
        conn = self.open()
        pool = self._call(lambda: conn.storagePoolLookupByName(name), "storage pool " + name)
        return self._call(lambda: pool.XMLDesc(0), "XML of storage pool " + name)


def quick_state(uri, name, uuid, budget):
    """(state, reason) of a domain, (SHUTOFF, 0) if libvirt does not know it: the monitor's
    question, asked through libvirt's C extension ``libvirtmod`` directly.

    The monitor runs every few seconds for every VM; ``import libvirt`` costs ~21 ms of its
    ~40 ms here, ~9 ms of which is the generated wrapper module and the ``typing`` it
    imports (python3 -X importtime): the four calls below are all the monitor needs, and
    the wrapper adds nothing to them but objects. Errors are read and classified the way
    the wrapper's libvirtError does (``virGetLastError``, thread-local: read in the thread
    that made the call). If the full binding is already loaded (another caller, or a test's
    fake), it is used instead, through Hypervisor.
    """
    import sys
    if "libvirt" in sys.modules:
        hv = Hypervisor(uri, _Budget(budget))
        try:
            return hv.state(name, uuid)
        finally:
            hv.close()
    import libvirtmod as mod
    mod.virRegisterErrorHandler(_quiet, None)  # libvirt would print each error to stderr

    def failure(what):
        err = mod.virGetLastError()
        if err is None:
            return VirtOperationFailed("%s failed" % what)
        return classify_codes(err[0], err[1], err[2] or "", what)

    def work():
        conn = mod.virConnectOpen(uri)
        if conn is None:
            raise failure("connect to %s" % uri)
        try:
            dom = mod.virDomainLookupByUUIDString(conn, uuid) if uuid else None
            if dom is None:
                if uuid:
                    e = failure("lookup " + uuid)
                    if not isinstance(e, DomainNotFound):
                        raise e
                dom = mod.virDomainLookupByName(conn, name)
                if dom is None:
                    e = failure("lookup " + str(name))
                    if isinstance(e, DomainNotFound):
                        return SHUTOFF, 0
                    raise e
            try:
                st = mod.virDomainGetState(dom, 0)
                if st is None:
                    e = failure("state of " + str(name))
                    if isinstance(e, DomainNotFound):
                        return SHUTOFF, 0
                    raise e
                return st[0], st[1]
            finally:
                mod.virDomainFree(dom)
        finally:
            mod.virConnectClose(conn)
    try:
        return bounded.call(work, budget, "libvirt state")
    except bounded.Timeout:
        raise LibvirtUnreachable("libvirt did not answer within %.1f s" % budget) from None


def _quiet(_ctx, _err):
    return None


class _Budget:
    """A deadline-like view of a plain number of seconds (for Hypervisor)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def at_most(self, cap):
        return max(0.0, min(cap, self.seconds))


DEFAULT_URI = "qemu:///system"
_DEFAULT_URI = {}    # this process's answer of `virsh uri`


def default_uri(timeout, log=None):
    """This node's default libvirt URI, as ocf:heartbeat:VirtualDomain takes it when the
    hypervisor parameter is unset: what `virsh --quiet uri` answers (LIBVIRT_DEFAULT_URI,
    uri_default of libvirt.conf, else libvirt's probe), bounded by ``timeout``; qemu:///system
    (root's default) when virsh cannot tell (libvirtd down, virsh missing, no answer in
    time). Asked once per process."""
    if "uri" in _DEFAULT_URI:
        return _DEFAULT_URI["uri"]
    uri = None
    try:
        r = bounded.command(["virsh", "--quiet", "uri"], max(0.5, timeout), log=log)
        answer = r.out.strip()
        if r.rc == 0 and "://" in answer and not any(c.isspace() for c in answer):
            uri = answer
    except (OSError, bounded.Timeout) as e:
        if log:
            log.debug("virsh uri: %s", e)
    if uri is None:
        if log:
            log.info("hypervisor not set and `virsh uri` gave no URI: using %s", DEFAULT_URI)
        uri = DEFAULT_URI
    _DEFAULT_URI["uri"] = uri
    return uri


def qemu_pid_of(name, run_dir="/run/libvirt/qemu"):
    """PID of the QEMU running domain ``name`` on this node, or None.

    Used when libvirtd cannot be asked: a probe must not answer "not running" on a guess.
    libvirt's pid file is checked against the process's command line (``-name guest=NAME``)
    and its network namespace (a node has one; the lab's nodes share a kernel)."""
    try:
        with open(os.path.join(run_dir, name + ".pid")) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    want = ("guest=" + name).encode()
    if not any(a == want or a.startswith(want + b",") for a in args):
        return None
    try:
        if os.readlink("/proc/%d/ns/net" % pid) != os.readlink("/proc/self/ns/net"):
            return None
    except OSError:
        pass
    return pid


def wait_gone(pid, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


class MigrationTimeout(VirtError):
    pass


def abort_reserve(timeout):
    """Seconds of an action's deadline kept for aborting a migration and hearing where the
    guest runs: abortJob makes QEMU cancel the stream and libvirt resume the source, which
    took ~0.1-2 s on the lab; a fifth of the action's timeout, 3 to 15 s."""
    return max(3.0, min(15.0, (timeout or 0) / 5.0))


class Switch:
    """What virsh migrate's --timeout and --postcopy-after-precopy do during the job:
    after ``after_s`` seconds (None: never) 'suspend' the guest (the rest of its memory
    then converges) or switch to 'postcopy'; with ``after_precopy``, switch to post-copy
    once the first pass over the memory is done (the job's memory_iteration reaches 2,
    where virsh watches the iteration event). A plain class: collections costs the
    monitor's import ~6 ms."""
    __slots__ = ("after_s", "action", "after_precopy")

    def __init__(self, after_s, action, after_precopy):
        self.after_s, self.action, self.after_precopy = after_s, action, after_precopy

    def __eq__(self, other):
        return isinstance(other, Switch) and (self.after_s, self.action, self.after_precopy) \
            == (other.after_s, other.action, other.after_precopy)

    def __repr__(self):
        return "Switch(%r, %r, %r)" % (self.after_s, self.action, self.after_precopy)


def _switch_due(switch, stats, elapsed):
    """The action ('suspend', 'postcopy') due now, or None. Post-copy only once QEMU sends
    memory (memory_iteration 1): libvirt's job exists earlier, and QEMU then refuses
    migrate-start-postcopy ("Enable postcopy with migrate_set_capability before the start
    of migration", lab, under load)."""
    iteration = stats.get("memory_iteration", 0)
    if switch.after_precopy and iteration >= 2:
        return "postcopy"
    if switch.after_s is not None and elapsed >= switch.after_s and (
            switch.action != "postcopy" or iteration >= 1):
        return switch.action
    return None


def migrate(hv, dom, dconnuri, params, flags, max_downtime_ms=0, log=None, poll=0.25,
            switch=None):
    """Live-migrate ``dom`` with ``migrateToURI3`` and a deadline.

    The blocking call runs in a worker thread; this thread watches the job's statistics
    (progress goes to the log), applies the maximum downtime once the job exists
    (libvirt-python 9.0 takes no downtime parameter in migrateToURI3), and, when only the
    abort reserve of the deadline is left, aborts the job. Every one of these libvirt calls
    is bounded (a libvirtd that stops answering must not hold the action past its deadline).
    After an abort the domain's state on this node is asked again: the error says where the
    guest actually runs. Returns the completed job's statistics when libvirt reports them.
    """
    import threading
    box = {}

    def work():
        try:
            dom.migrateToURI3(dconnuri, params, flags)
        except BaseException as e:
            box["error"] = e

    worker = threading.Thread(target=work, name="migrate", daemon=True)
    t0 = time.monotonic()
    worker.start()
    reserve = abort_reserve(getattr(hv.deadline, "timeout", 0))
    downtime_set = not max_downtime_ms
    switched = switch is None
    switch_failures = []
    last_log = 0.0
    while worker.is_alive():
        if hv.deadline.remaining() <= reserve:
            raise _abort(hv, dom, dconnuri, worker, box, t0, log)
        try:
            stats = hv.job_stats(dom, cap=min(5.0, hv.deadline.remaining() - reserve))
        except VirtError:
            stats = {}
        if stats and not downtime_set:
            try:
                hv.set_max_downtime(dom, max_downtime_ms,
                                    cap=min(5.0, hv.deadline.remaining() - reserve))
                downtime_set = True
            except VirtError as e:
                if log:
                    log.debug("migrateSetMaxDowntime not yet possible: %s", e)
        now = time.monotonic()
        if stats and not switched:
            switched = _apply_switch(hv, dom, switch, stats, now - t0, reserve, log,
                                     switch_failures)
        if log and stats and now - last_log >= 2.0:
            last_log = now
            log.info("migration progress: %.0f s, %s MiB remaining of %s MiB, iteration %s",
                     now - t0, _mib(stats.get("memory_remaining")),
                     _mib(stats.get("memory_total")), stats.get("memory_iteration", "?"))
        worker.join(max(0.0, min(poll, hv.deadline.remaining() - reserve)))
    if "error" in box:
        e = box["error"]
        if isinstance(e, hv.mod.libvirtError):
            raise classify(e, "migrate to %s" % dconnuri)
        raise e
    try:
        return hv.job_stats(dom, completed=True, cap=min(5.0, hv.deadline.remaining()))
    except VirtError:
        return {}


def _apply_switch(hv, dom, switch, stats, elapsed, reserve, log, failures):
    """Suspend or switch to post-copy when due; True once done. A refusal is tried again
    at the next poll (the job may not have reached the state QEMU wants); the first one
    is logged as a warning (``failures`` counts them)."""
    action = _switch_due(switch, stats, elapsed)
    if action is None:
        return False
    cap = max(0.5, min(5.0, hv.deadline.remaining() - reserve))
    try:
        if action == "postcopy":
            hv.start_postcopy(dom, cap=cap)
        else:
            hv.suspend(dom, cap=cap)
    except VirtError as e:
        failures.append(e)
        if log:
            (log.warning if len(failures) == 1 else log.debug)(
                "migration: cannot %s after %.0f s (trying again): %s", action, elapsed, e)
        return False
    if log:
        log.info("migration: %s after %.0f s (iteration %s)", "switched to post-copy"
                 if action == "postcopy" else "guest suspended so that it converges",
                 elapsed, stats.get("memory_iteration", "?"))
    return True


def _abort(hv, dom, dconnuri, worker, box, t0, log):
    """Abort the migration job within the reserve and say where the guest runs now."""
    if log:
        log.warning("migration to %s reached its deadline after %.1f s: aborting it",
                    dconnuri, time.monotonic() - t0)
    try:
        hv.abort_job(dom, cap=max(0.5, hv.deadline.remaining() / 2))
    except VirtError as e:
        if log:
            log.warning("abortJob: %s", e)
    worker.join(max(0.0, hv.deadline.remaining() / 2))
    try:
        state, _ = hv.state_of(dom, cap=max(0.5, hv.deadline.remaining()))
        where = None
    except VirtError as e:
        state, where = None, "its state on this node is unknown (%s): check both nodes" % e
    if where is None:
        if worker.is_alive():
            where = ("the migration had not ended when the deadline came (domain %s here): "
                     "check both nodes" % STATE_NAMES.get(state, state))
        elif state in LIVE_STATES and "error" in box:
            where = "aborted, the domain still runs on this node (%s)" % STATE_NAMES.get(
                state, state)
        elif state in LIVE_STATES:
            where = ("the migration finished as it was aborted, yet the domain is still %s "
                     "here: check both nodes" % STATE_NAMES.get(state, state))
        else:
            where = ("the migration completed as the deadline came: the domain no longer runs "
                     "on this node (it runs on the target)")
    return MigrationTimeout("live migration to %s did not finish within the %.0f s timeout of "
                            "migrate_to; %s" % (dconnuri, getattr(hv.deadline, "timeout", 0),
                                                where))


def _mib(n):
    return "?" if n is None else "%.1f" % (n / 1048576.0)
