"""ocf:vmceph:RBDVirtualDomain: the actions.

Each action gathers facts through the adapters (virt, ceph, cluster), decides with
safety.py, then acts. The monitor at depth 0 imports only this module, ocf, virt and
libvirt: domain XML, Ceph and the decision code are imported inside the actions that need
them (see the import-time figures in ocf.py).

The class keeps validation, monitor and start; the stop sequence is vmceph.stopseq and the
migration vmceph.migration, each imported by the actions that run them.
"""

import os

from vmceph import ocf
from vmceph.ocf import (OCF_NOT_RUNNING, OCF_SUCCESS, ConfigError, GenericError,
                        InstalledError, OCFError, PermError)
from vmceph.rbdvd_params import SPEC
from vmceph import virt

STATE_PREFIX = "vmceph-RBDVirtualDomain-"

# Seconds of a start's deadline kept, when creating the domain, for the second inspection
# of its images, the generation stamp and, if need be, destroying the paused domain.
CHECK_RESERVE_S = 5.0
# A start that backed off from a racing writer (vmceph.startcheck) looks again after a random
# pause in this range, at most RACE_RETRIES times and only with RACE_MIN_LEFT_S of the
# deadline left after the pause: random, so that two starters that saw each other do not
# meet again; bounded, so that a real second writer is still refused in time.
RACE_PAUSE_S = (0.3, 2.5)
RACE_RETRIES = 2
RACE_MIN_LEFT_S = 10.0


class Contended(GenericError):
    """The second look of a start saw another writer appear: a racing starter."""


# ------------------------------------------------------------------ remembered identity

class Identity:
    """Name and UUID of the domain, remembered at start so that stop and monitor find it
    without the config file (which may be missing, or changed, on this node)."""
    __slots__ = ("name", "uuid", "config", "uri")

    def __init__(self, name, uuid=None, config=None, uri=None):
        # a UUID libvirt would refuse ("Invalid UUID" at every lookup) identifies nothing:
        # the name does (issue 16: stop failed on an invalid <uuid>)
        from vmceph.inputs import libvirt_uuid
        self.name, self.uuid, self.config = name, libvirt_uuid(uuid), config
        self.uri = uri   # the libvirt URI it was started with, when hypervisor is unset


def state_name(ctx):
    return ocf.state_file_name(STATE_PREFIX, ctx.instance, ".state")


def state_path(ctx):
    """Where the identity is written (the preferred state directory; see ocf.state_dirs)."""
    return os.path.join(ctx.state_dir, state_name(ctx))


def _enc(value):
    # one value per line whatever it contains
    return (value or "").replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D")


def _dec(value):
    return value.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def remember(ctx, ident):
    """Write the identity; False (logged) when no state directory is usable: the identity
    is then found from the config file, which is survivable, so start goes on."""
    text = "name=%s\nuuid=%s\nconfig=%s\n" % (_enc(ident.name), _enc(ident.uuid),
                                              _enc(ident.config))
    if ident.uri:
        text += "hypervisor=%s\n" % _enc(ident.uri)
    if ocf.write_state(ctx, state_name(ctx), text) is None:
        ctx.log.warning("cannot remember the identity of domain %s: stop and monitor will "
                        "identify it from its configuration file", ident.name)
        return False
    return True


def recall(ctx):
    text = ocf.read_state(ctx, state_name(ctx))
    if text is None:
        return None
    kv = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
    name = _dec(kv.get("name", ""))
    if not name:
        return None
    return Identity(name, _dec(kv.get("uuid", "")) or None, _dec(kv.get("config", "")) or None,
                    _dec(kv.get("hypervisor", "")) or None)


def forget(ctx):
    ocf.remove_state(ctx, state_name(ctx))


def identify(ctx, allow_config=True):
    """Identity from the state file, else from the config file; None if neither."""
    ident = recall(ctx)
    if ident is not None or not allow_config:
        return ident
    config = ctx.params.raw("config")
    from vmceph.defstore import is_uri
    if not config or not (is_uri(config) or os.path.isfile(config)):
        return None
    from vmceph.domident import DomainXMLError, name_and_uuid
    try:
        data = domain_xml(ctx)
    except DomainXMLError:
        return None
    # the name and UUID alone, without lxml (a probe at cluster start needs no more); a
    # document not plain enough for that cheap reader is parsed in full (domident)
    found = name_and_uuid(data)
    if found is not None:
        return Identity(found[0], found[1], config)
    from vmceph.domxml import parse_domain
    try:
        dom = parse_domain(data, source="domain configuration %s" % config)
    except DomainXMLError:
        return None
    return Identity(dom.name, dom.uuid, config)


_XML_READ = [None]   # (weakref to ctx, config, fresh, bytes) of this process's action
_XML_ERRORS = None   # (Unreadable, NoCopy), made at the first read


def _xml_errors():
    """DomainXMLError's kinds for a definition in Ceph (domxml imported lazily): Ceph
    cannot be asked (the cluster's state: generic), this node has no copy (installed)."""
    from vmceph.domident import DomainXMLError

    class Unreadable(DomainXMLError):
        pass

    class NoCopy(DomainXMLError):
        pass
    return Unreadable, NoCopy


def _deep_monitor(ctx):
    return ctx.action == "monitor" and not ctx.is_probe and (ctx.depth or 0) >= 10


def domain_xml(ctx, fresh=False):
    """The domain XML (bytes) that ``config`` names: a file, or a definition kept in Ceph
    (``ceph:POOL[/NAMESPACE]/NAME``, vmceph.defstore, docs/definitions.md).

    For a definition in Ceph, ``fresh`` (start, migrate_to, migrate_from, validate-all)
    reads the current version from Ceph and keeps it as this node's local copy; otherwise
    (probe, monitor, stop) only the local copy is read: they work when Ceph cannot be
    reached, as with a file. DomainXMLError when it cannot be had, with the reason. An
    action reads it once: later calls of the same action return the same bytes."""
    from vmceph import defstore
    from vmceph.domident import DomainXMLError, read_domain_file
    global _XML_ERRORS
    if _XML_ERRORS is None:
        _XML_ERRORS = _xml_errors()
    config = ctx.params.raw("config") or ""
    last = _XML_READ[0]
    if last is not None and last[0]() is ctx and last[1] == config and (last[2] or not fresh):
        return last[3]
    try:
        ref = defstore.parse_uri(config)
    except ValueError as e:
        raise DomainXMLError("parameter config: %s" % e) from None
    data = None
    if ref is None:
        data = read_domain_file(config)
    elif not fresh:
        data = defstore.cache_read(ctx.env, ref)
        # A deep monitor talks to Ceph anyway: without the copy it reads Ceph (and keeps
        # the copy). Seen in the lab: a resource switched to Ceph by 'vmceph config import
        # --apply' has no copy on the node that runs it, and its depth-20 monitor's
        # OCF_ERR_INSTALLED made Pacemaker restart the VM the import meant to keep.
        if data is None and not _deep_monitor(ctx):
            raise _XML_ERRORS[1]("definition %s: this node has no local copy (it is made "
                                 "when the domain starts or migrates here)" % ref.uri)
    if data is None:
        p = LenientParams(ctx)
        try:
            data, entry = defstore.fetch(ref, p.get("ceph_conf"), p.get("ceph_user"),
                                         p.get("ceph_keyring"), ctx.deadline, ctx.log)
        except defstore.DefError as e:
            if not fresh:   # the deep monitor's fallback: the copy is what is missing
                raise _XML_ERRORS[1]("definition %s: this node has no local copy, and "
                                     "Ceph cannot give it: %s" % (ref.uri, e)) from None
            raise _XML_ERRORS[0]("definition %s cannot be read from Ceph: %s" % (ref.uri, e)
                                 ) from None
        ctx.log.info("definition %s: version %d (stored by %s at %s)", ref.uri,
                     entry["version"], entry["who"], entry["when"])
        try:
            defstore.cache_write(ctx.env, ref, data)
        except OSError as e:  # probe/monitor/stop then identify the domain by its state
            ctx.log.warning("cannot keep a local copy of %s: %s", ref.uri, e)
    import weakref  # never keep a finished action's context (its log's fd) alive
    _XML_READ[0] = (weakref.ref(ctx), config, fresh, data)
    return data


# ------------------------------------------------------------------ the agent

class RBDVirtualDomain:
    spec = SPEC

    # ---------------------------------------------------------------- validation
    def validate(self, ctx):
        """Cheap checks for every action; the full set for start, migrate and validate-all.
        Missing things on this node -> OCF_ERR_INSTALLED; wrong values -> OCF_ERR_CONFIGURED."""
        p = ctx.params
        config = p.raw("config")
        if not config:
            raise ConfigError("required parameter config is not set")
        if ctx.action in ("monitor", "status", "stop"):
            # what these actions read: the config's shape and the URI they connect to. Only
            # cheap checks here (the depth-0 monitor runs every few seconds).
            p.config
            p.hypervisor
            _check_transports(p, ("hypervisor",))
            recurring = ctx.action != "stop" and not ctx.is_probe
            if recurring and p.monitor_scripts:
                p.checked("monitor_scripts")
            if recall(ctx) is None:
                from vmceph.defstore import is_uri
                from vmceph.domident import DomainXMLError  # the probe imports no lxml
                if is_uri(config):
                    # a definition in Ceph: this node's local copy stands for the file
                    try:
                        data = domain_xml(ctx)
                    except DomainXMLError as e:
                        raise InstalledError(str(e)) from None
                else:
                    try:
                        ocf.regular_file(config)
                    except ocf.NotHere as e:
                        raise InstalledError("domain configuration %s %s"
                                             % (ocf.shown(config), e))
                    data = None
                if recurring:
                    # identify() reads the XML: a malformed one is this node's file (5),
                    # as validate-all says (xml_error)
                    from vmceph.domxml import parse_domain
                    try:
                        _check_uuid(config, parse_domain(
                            data if data is not None else domain_xml(ctx),
                            source="domain configuration %s" % config))
                    except DomainXMLError as e:
                        raise xml_error(config, e) from None
            return
        # Every problem of the values themselves (6) is reported before what this node lacks
        # (5): no node can do better with a wrong value.
        missing = None
        # validate-all at OCF_CHECK_LEVEL 0: the values only, nothing of this node (no
        # file, program, module, Ceph, libvirt or Pacemaker): see Context.checks_environment
        local = ctx.action != "validate-all" or ctx.checks_environment
        try:
            p.validate(local=local)
        except InstalledError as e:
            missing = e
        _check_transports(p)
        if p.snapshot and p.force_stop:
            raise ConfigError("snapshot and force_stop exclude each other: a forced stop "
                              "cannot save the guest's memory")
        from vmceph.migration import migration_args
        migration_args(p, "target")   # every option understood, no conflicting pair
        static = {}
        if p.node_addresses or p.membership:   # unset (the usual case): nothing to parse,
            # and migrate_from imports no vmceph.cluster (socket, ElementTree, safety)
            from vmceph.cluster import parse_membership, parse_node_addresses
            try:
                static = parse_node_addresses(p.node_addresses)
                parse_membership(p.membership)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if ctx.action == "validate-all" and static and not p.membership and local:
            _warn_unknown_node_names(ctx, static)
        if not local:
            return
        if missing is not None:
            raise missing
        if ctx.action != "migrate_from":
            from vmceph.inputs import ceph_conf_problem
            problem = ceph_conf_problem(p.ceph_conf)
            if problem:
                cls = InstalledError if problem[0] == "missing" else ConfigError
                raise cls("parameter ceph_conf=%s: %s" % (ocf.shown(p.ceph_conf), problem[1]))
        if p.sync_config_on_stop and not _which("csync2"):
            raise InstalledError("sync_config_on_stop is set but csync2 is not installed")
        if ctx.action == "migrate_to":
            # the parameters are good: the cluster view, the Ceph connection and the
            # target's health are asked now, while the modules below are imported and the
            # domain parsed (migration.head_start); migrate_to takes their answers
            from vmceph import migration
            self._early = (ctx, migration.head_start(ctx))
            try:
                return self._validate_local(ctx, config)
            except BaseException:
                if self._early[1] is not None:
                    self._early[1][0].abandon()
                self._early = None
                raise
        self._validate_local(ctx, config)

    def _validate_local(self, ctx, config):
        """The end of validate: Python modules installed, the domain's XML and disks."""
        # migrate_from never talks to Ceph: importing rados and rbd only to check that they
        # are installed cost it ~20 ms of its ~100 (make bench, docs/benchmarks.md)
        needed = ("libvirt", "lxml") if ctx.action == "migrate_from" else \
            ("rados", "rbd", "libvirt", "lxml")
        for mod in needed:
            try:
                __import__(mod)
            except ImportError:
                raise InstalledError("Python module %s is missing (install python3-%s)"
                                     % (mod, "lxml" if mod == "lxml" else mod)) from None
        # the XML must parse, and its disks must be understood (migrate_from only needs the
        # domain's name: it never looks at the images)
        _check_uuid(config, self._domain(ctx, resolve=ctx.action != "migrate_from"))

    # roots of the kernel's view of krbd devices (vmceph.disks); tests point them at a tree
    sys_root = "/sys"
    dev_root = "/dev"

    def _domain(self, ctx, resolve=True):
        """The domain of ``config``; with ``resolve``, every RBD disk of every form (network,
        storage-pool volume, krbd) found and checked to be in the cluster of ceph_conf
        (vmceph.disks, docs/disks.md). Done once per action: validate and the action share
        it. Never on the depth-0 monitor, stop or probe path."""
        cached = getattr(self, "_dom_cache", None)
        if cached is not None and cached[0] is ctx and (cached[1] or not resolve):
            return cached[2]
        from vmceph.domxml import DomainXMLError, parse_domain
        config = ctx.params.config
        fresh = ctx.action in ("start", "migrate_to", "migrate_from", "validate-all")
        try:
            dom = parse_domain(domain_xml(ctx, fresh=fresh),
                               source="domain configuration %s" % config)
        except DomainXMLError as e:
            if _XML_ERRORS is not None and isinstance(e, _XML_ERRORS[0]):
                raise GenericError(str(e)) from None    # Ceph's state, not the value's
            if _XML_ERRORS is not None and isinstance(e, _XML_ERRORS[1]):
                raise InstalledError(str(e)) from None  # this node's lack
            raise xml_error(config, e) from None
        if resolve:
            dom = self._resolve_disks(ctx, dom)
        self._dom_cache = (ctx, resolve, dom)
        return dom

    def _resolve_disks(self, ctx, dom):
        from vmceph import disks
        from vmceph.cluster import resolve as resolve_name
        p = ctx.params
        hv = virt.Hypervisor(hypervisor(ctx), ctx.deadline, ctx.log)  # connects only for pools
        try:
            r = disks.resolve(dom, hv, disks.parse_unguarded(p.unguarded_disks),
                              sys_root=self.sys_root, dev_root=self.dev_root)
        finally:
            hv.close()
        for w in r.warnings:
            ctx.log.warning("%s", w)
        problems = list(r.problems)
        try:
            problems += disks.check_cluster(
                r.domain, p.ceph_conf, p.ceph_user,
                resolver=lambda n: resolve_name(n, ctx.deadline.at_most(2.0)),
                read_timeout=ctx.deadline.at_most(disks.READ_TIMEOUT_S))
        except OSError as e:
            raise InstalledError("ceph_conf %s cannot be read: %s" % (p.ceph_conf, e)) from None
        for w in [x for x in problems if x.kind == disks.WARNING]:
            ctx.log.warning("%s", w.reason)
        problems = [x for x in problems if x.kind != disks.WARNING]
        if problems:
            err = disks.DisksError(problems)
            cls = {disks.CONFIGURED: ConfigError, disks.INSTALLED: InstalledError}.get(
                err.kind, GenericError)
            raise cls(str(err))
        return r.domain

    def degraded(self, ctx, error):
        """stop or probe with an environment that failed validation (ocf-rarun's rules)."""
        ident = identify(ctx)
        if ident is None:
            ctx.log.info("%s: %s; no domain of this resource is known on this node",
                         ctx.action, error.reason)
            return OCF_SUCCESS if ctx.action == "stop" else OCF_NOT_RUNNING
        ctx.log.warning("%s of domain %s despite an invalid configuration: %s",
                        ctx.action, ident.name, error.reason)
        if ctx.action == "stop":
            return self._stop(ctx, ident, uri=lenient_hypervisor(ctx, ident))
        return self._monitor_state(ctx, ident, uri=lenient_hypervisor(ctx, ident))

    # ---------------------------------------------------------------- monitor
    def monitor(self, ctx):
        ident = identify(ctx)
        if ident is None:
            if ctx.is_probe:
                return OCF_NOT_RUNNING
            raise InstalledError("domain configuration %s cannot be read and no running "
                                 "domain is remembered" % ctx.params.config)
        rc = self._monitor_state(ctx, ident, hypervisor(ctx, ident))
        if rc == OCF_NOT_RUNNING and ctx.is_probe:
            # the first probe after a reboot: what a QEMU of the earlier boot left in Ceph
            # is dead for certain, and only this node knows it (deadclients)
            from vmceph import deadclients
            deadclients.attest_earlier_boot(ctx, ctx.deadline)
        if rc != OCF_SUCCESS or ctx.is_probe:
            return rc
        if ctx.params.save_config_on_stop or ctx.params.sync_config_on_stop:
            from vmceph import configsave  # as VirtualDomain: at every recurring monitor
            configsave.save_by_name(ctx, ident, hypervisor(ctx, ident), "monitor")
        if ctx.params.monitor_scripts:
            run_monitor_scripts(ctx, once=True)
        if ctx.depth >= 10:
            self._deep_check(ctx, ident, sole_writer=ctx.depth >= 20)
        return OCF_SUCCESS

    def _monitor_state(self, ctx, ident, uri):
        try:
            state, reason = virt.quick_state(uri, ident.name, ident.uuid,
                                             ctx.deadline.at_most(30.0))
        except virt.LibvirtUnreachable as e:
            return self._libvirt_down(ctx, ident, e)
        except virt.VirtError as e:
            raise GenericError("cannot query domain %s: %s" % (ident.name, e)) from None
        if state in virt.ACTIVE_STATES:
            if state == virt.PAUSED and reason == virt.PAUSED_IOERROR:
                raise GenericError("domain %s is paused on an I/O error (its disks are "
                                   "unreachable, or its Ceph client was blocklisted)"
                                   % ident.name)
            return OCF_SUCCESS
        if state == virt.CRASHED:
            # on_crash='preserve': the QEMU is still there with its images open. Not "not
            # running" (Pacemaker would start it elsewhere while this one holds the images),
            # a failure: Pacemaker stops it (destroy) and recovers the resource.
            raise GenericError("domain %s crashed and libvirt keeps it (on_crash=preserve): "
                               "its QEMU still has the images open; stop destroys it"
                               % ident.name)
        return OCF_NOT_RUNNING

    def _libvirt_down(self, ctx, ident, error):
        """libvirtd cannot be asked (stopped, restarting, upgraded): the probe and the
        recurring monitor answer from the domain's QEMU process itself. While it runs, the
        guest runs: success, so that a libvirtd restart never makes Pacemaker recover (stop,
        then start: every VM of the node restarted). Without it, a probe answers "not
        running" (nothing of this domain runs here) but a recurring monitor fails: the
        resource was running here, and "not running" on a guess would let Pacemaker start
        it elsewhere without stopping it here."""
        pid = virt.qemu_pid_of(ident.name)
        if pid is not None:
            ctx.log.warning("libvirt unreachable (%s); QEMU of domain %s runs (pid %d): "
                            "running", error, ident.name, pid)
            return OCF_SUCCESS
        if not ctx.is_probe:
            raise GenericError("libvirt unreachable, state of domain %s unknown and no QEMU "
                               "process of it on this node: %s" % (ident.name, error))
        ctx.log.warning("libvirt unreachable (%s); no QEMU process of domain %s on this node",
                        error, ident.name)
        return OCF_NOT_RUNNING

    def _deep_check(self, ctx, ident, sole_writer):
        from vmceph import facts
        if not sole_writer:
            # depth 10 asks for the quorum alone: no domain XML, cluster view (crm_mon,
            # cibadmin) or images, which took ~60 of its ~145 ms (make bench)
            # Not being able to ask Ceph is a warning, not a failure (issue 10): a failed
            # monitor restarts the VM, whose start is then refused without quorum, so a
            # quorum blip would restart every VM with a deep monitor for nothing.
            ok, detail = facts.quorum_only(ctx.params, ctx.deadline, ctx.log)
            if not ok:
                ctx.log.warning("deep monitor cannot check Ceph: %s", detail)
            return
        dom = self._domain(ctx)
        with facts.gather(ctx, dom, domain_active=True, images=sole_writer) as g:
            from vmceph.safety import check_sole_writer
            result = check_sole_writer(g.facts)   # no quorum, uninspectable: warnings
            for warning in result.warnings:
                ctx.log.warning("deep monitor: %s", warning)
            if not result.ok:
                raise GenericError("; ".join(result.problems))

    # ---------------------------------------------------------------- start
    def start(self, ctx):
        dom = self._domain(ctx)
        uri = hypervisor(ctx)
        remember(ctx, Identity(dom.name, dom.uuid, ctx.params.config, uri))
        hv = virt.Hypervisor(uri, ctx.deadline, ctx.log)
        try:
            self._start_backing_off(ctx, hv, dom)
        finally:
            hv.close()
        if ctx.params.monitor_scripts:
            run_monitor_scripts(ctx, once=False)
        utilization(ctx, dom)
        return OCF_SUCCESS

    def _start_backing_off(self, ctx, hv, dom):
        """_start_once, again after a random pause when it backed off from a racing
        writer; the final failure says that it did."""
        import random
        import time
        backed_off = []
        while True:
            try:
                return self._start_once(ctx, hv, dom)
            except Contended as e:
                pause = random.uniform(*RACE_PAUSE_S)
                if len(backed_off) >= RACE_RETRIES or \
                        ctx.deadline.remaining() < pause + RACE_MIN_LEFT_S:
                    raise
                backed_off.append(e.reason)
                ctx.log.warning("%s; looking again in %.1f s", e.reason, pause)
                time.sleep(pause)
            except OCFError as e:
                if backed_off:  # the look after a back-off refused: say what came before
                    e.reason = "%s (after backing off %d time(s) from a writer that appeared " \
                               "while the domain was created paused)" % (e.reason, len(backed_off))
                raise

    def _start_once(self, ctx, hv, dom):
        """First look, decision, recovery, paused create, second look, resume."""
        from vmceph import facts, safety
        try:
            state, reason = hv.state(dom.name, dom.uuid)
        except virt.VirtError as e:
            raise GenericError("libvirt: %s" % e) from None
        if state == virt.CRASHED:
            raise GenericError("domain %s crashed and libvirt keeps it (on_crash=preserve): "
                               "its QEMU still has the images open; stop the resource "
                               "(destroys it) before starting it again" % dom.name)
        active = state in virt.ACTIVE_STATES
        with facts.gather(ctx, dom, domain_active=active) as g:
            verdict = safety.decide_start(g.facts)
            ctx.log.info("start decision for %s: %s (%s)", dom.name, verdict.kind,
                         verdict.summary())
            raise_for(verdict)
            if verdict.recoveries:
                facts.recover(ctx, g.session, verdict.recoveries)
            if not active:
                self._create(ctx, hv, dom, g, verdict)
                return
            self._remember_clients(ctx, dom, running_qemu_clients(dom, g.facts))
            if state == virt.PAUSED and reason == virt.PAUSED_USER:
                ctx.log.warning("domain %s is paused (by a start that did not finish, or "
                                "by hand): left paused; 'virsh resume' it if it should "
                                "run", dom.name)

    def _create(self, ctx, hv, dom, g, verdict):
        """Create the domain paused, check that its QEMU is the only writer of every
        guarded image (vmceph.startcheck), stamp a new generation, resume. On any failure
        after the create, the paused domain is destroyed: no vCPU of it ever ran."""
        p = ctx.params
        # Read the XML before anything can remove the file: undefining a persistent domain
        # makes libvirt delete its own copy, /etc/libvirt/qemu/<name>.xml, which may be the
        # very file `config` names (issue 9).
        xml = domain_xml(ctx, fresh=True).decode("utf-8")   # what _domain parsed
        saved = snapshot_file(p.snapshot, dom.name)
        saved = self._still_current(ctx, g, dom, saved) if saved and os.path.exists(saved) \
            else None
        try:
            self._undefine_keeping(ctx, hv, dom, p.config, xml)
            if p.start_resources:
                start_resources(ctx, hv, dom)
        except virt.LibvirtUnreachable as e:
            raise GenericError("libvirt unreachable, cannot start %s: %s" % (dom.name, e))
        except virt.VirtError as e:
            raise GenericError("libvirt failed to start %s: %s" % (dom.name, e)) from None
        # keep time for the check, the generation and, if need be, the destroy
        cap = max(1.0, ctx.deadline.remaining() - CHECK_RESERVE_S)
        created = "no"
        from vmceph import createmark
        # From here to the resume, a death of this process leaves a paused domain (or one
        # libvirt is still creating) that Pacemaker believes stopped: the mark tells the
        # stop it runs next to wait for the create and destroy at once (vmceph.createmark).
        kernel = {d.spec for d in dom.guarded_disks if getattr(d, "krbd_client", None)}
        createmark.mark(ctx, [i for i in g.facts.images if i.spec not in kernel])
        try:
            try:
                if saved:
                    hv.restore(saved, paused=True, cap=cap)
                else:
                    hv.create(xml, paused=True, cap=cap)
                created = "yes"
                vdom = hv.lookup(dom.name, dom.uuid)
            except virt.CallTimeout as e:
                created = "maybe"      # abandoned: libvirt may still create it, paused
                raise GenericError("libvirt unreachable, cannot start %s: %s" % (dom.name, e))
            except virt.LibvirtUnreachable as e:
                raise GenericError("libvirt unreachable, cannot start %s: %s" % (dom.name, e))
            except virt.VirtError as e:
                raise GenericError("libvirt failed to start %s: %s" % (dom.name, e)) from None
            finally:
                if created == "no":      # nothing was made ("maybe": libvirt may still)
                    createmark.clear(ctx)
            check = self._verify_sole_writer(ctx, dom, g, verdict)
            if not check.ok:
                raise (Contended if check.contended else GenericError)("start of %s abandoned, the paused domain was destroyed "
                                   "before any of its vCPUs ran: %s" % (dom.name,
                                                                       check.summary()))
            ctx.log.info("%s created paused; its QEMU is the only writer (%s)", dom.name,
                         ", ".join("%s: %s" % o for o in check.ours) or "no guarded disks")
            # recorded before the resume (which takes the locks): an agent killed after it
            # still leaves the proof a later stop or start needs (deadclients)
            self._remember_clients(ctx, dom, check.ours)
            self._stamp(ctx, g, dom, "restore" if saved else "start")
            try:
                hv.resume(vdom)
            except virt.VirtError as e:
                raise GenericError("cannot resume %s after the paused create: %s"
                                   % (dom.name, e)) from None
            createmark.clear(ctx)
        except BaseException:
            if self._destroy_paused(ctx, hv, dom, created) and created == "yes":
                createmark.clear(ctx)
            raise
        if saved:
            from vmceph import generation
            for err in generation.discard(saved):  # restored: the file must not be reused
                ctx.log.warning("cannot delete the restored state: %s", err)
            ctx.log.info("domain %s restored from %s", dom.name, saved)
        ctx.log.info("domain %s started", dom.name)

    def _remember_clients(self, ctx, dom, ours):
        """Record which client instances are this QEMU's (vmceph.deadclients), so that a
        restart after it was killed may recover them; best-effort, logged."""
        from vmceph import deadclients
        if not deadclients.remember_qemu(ctx, dom.name, ours):
            ctx.log.debug("client instances of %s's QEMU not recorded", dom.name)

    def _verify_sole_writer(self, ctx, dom, g, verdict):
        """startcheck.judge_after_create over a second inspection of every guarded image,
        through the session of the first look (the owners map is the same: a second
        cluster view would add ~30 ms and see the same members)."""
        from vmceph import startcheck
        from vmceph.ceph import CephError
        specs = [i.spec for i in g.facts.images]
        if not specs:
            return startcheck.AfterCreate(True)
        try:
            after = g.session.inspect_all(specs)
        except CephError as e:
            return startcheck.AfterCreate(False, ("cannot inspect the images again after the "
                                                  "paused create: %s" % e,))
        excepted = frozenset(r.addr for r in verdict.recoveries)
        kernel = frozenset(d.spec for d in dom.guarded_disks if getattr(d, "krbd_client", None))
        if kernel:  # the first look left this node's own krbd client out: so does this one
            from vmceph.disks import without_own_krbd
            after = without_own_krbd(dom, after)
        return startcheck.judge_after_create(g.facts.images, after, g.facts.owners, excepted,
                                             kernel)

    def _stamp(self, ctx, g, dom, why):
        """A new generation in the first guarded image (vmceph.generation): any memory
        state saved before this start is stale from now on. Failing it fails the start:
        running without it would let such a state be restored over this run's writes."""
        from vmceph import generation
        from vmceph.ceph import CephError
        specs = [i.spec for i in g.facts.images]
        if not specs:
            return
        token = generation.new_token(ctx.node_name, why)
        try:
            g.session.image_meta_set(specs[0], generation.META_KEY, token)
        except CephError as e:
            raise GenericError("cannot record the start of %s in the metadata of %s (%s): "
                               "the paused domain was destroyed" % (dom.name, specs[0], e)
                               ) from None
        ctx.log.info("generation of %s is now '%s'", specs[0], token)

    def _still_current(self, ctx, g, dom, saved):
        """``saved`` if its recorded generation is the image's current one, else None (the
        stale state is deleted, with a warning)."""
        from vmceph import generation
        from vmceph.ceph import CephError
        specs = [i.spec for i in g.facts.images]
        if not specs:
            return saved           # no shared disk: nothing newer can exist elsewhere
        try:
            current = g.session.image_meta_get(specs[0], generation.META_KEY)
        except CephError as e:
            ctx.log.warning("cannot read the generation of %s: %s", specs[0], e)
            current = None
        ok, why = generation.may_restore(generation.read_recorded(saved), current)
        if ok:
            ctx.log.info("saved state %s: %s", saved, why)
            return saved
        ctx.log.warning("discarding the saved memory state %s of %s: %s; the guest boots "
                        "from its disks instead", saved, dom.name, why)
        for err in generation.discard(saved):
            ctx.log.warning("cannot delete the stale state: %s", err)
        return None

    def _undefine_keeping(self, ctx, hv, dom, config, xml):
        """Remove an inactive persistent definition (libvirt could start it outside the
        cluster), and keep the file ``config`` whatever libvirt does to its own copy."""
        try:
            st = os.stat(config)
        except OSError:
            st = None
        if not hv.undefine_if_inactive(dom.name):
            return
        ctx.log.warning("removed an inactive persistent definition of %s, which libvirt "
                        "could have started outside the cluster's control", dom.name)
        if st is not None and not os.path.exists(config):
            write_keeping(config, xml, st, secret=False)
            ctx.log.warning("libvirt deleted %s when it undefined %s (it is libvirt's own "
                            "copy of the definition): written back unchanged; keep config "
                            "outside libvirt's directory (e.g. /etc/vmceph/domains/)",
                            config, dom.name)

    def _destroy_paused(self, ctx, hv, dom, created):
        """Destroy what a failed start created (paused, never resumed): ``created`` 'yes',
        or 'maybe' (the create timed out and may still finish in libvirt: only a domain
        that is paused is ours then). With 'no' (libvirt refused the create, e.g. the name
        was taken meanwhile) the domain there is not ours: never touched. True when nothing
        of this start is left running."""
        if created == "no":
            return True
        try:
            vdom = hv.lookup(dom.name, dom.uuid)
            if created == "maybe" and hv.state_of(vdom)[0] != virt.PAUSED:
                ctx.log.warning("domain %s exists and is not paused: not created by this "
                                "start, left alone", dom.name)
                return False
            hv.destroy(vdom)
            ctx.log.warning("destroyed the paused domain %s", dom.name)
        except virt.DomainNotFound:
            if created == "yes":
                ctx.log.info("paused domain %s already gone", dom.name)
        except virt.VirtError as e:
            ctx.log.error("cannot destroy the paused domain %s (%s): stop the resource",
                          dom.name, e)
            return False
        return True

    # ---------------------------------------------------------------- reload
    def reload(self, ctx):
        """Take changed parameters without touching the guest (OCF 1.0 "reload", which
        Pacemaker 2.1 calls for an agent of OCF version 1.0 when only parameters declared
        unique="0" changed; why not OCF 1.1's reload-agent: rbdvd_params.RELOAD).

        The dispatcher has validated the new values as for a start: a wrong one fails the
        reload, and Pacemaker recovers the resource. Between actions the agent keeps only
        the domain's identity (name, UUID, config; config is unique="1", so it cannot change
        here): every other parameter (node_addresses, ceph_*, blocklist_expire,
        unknown_client_policy, migration_*, monitor_scripts, ...) is read by each action
        from what Pacemaker passes it, and applies from the next one on; nothing is cached
        that would have to be refreshed. What reload applies at once: the utilization
        parameters (otherwise set at start and migrate_from only). The domain is neither
        stopped, redefined, paused nor resumed."""
        ident = identify(ctx, allow_config=False)
        if ident is None:
            ctx.log.info("reload: no domain of this resource runs on this node; the new "
                         "parameters apply at its next start")
            return OCF_SUCCESS
        utilization(ctx, self._domain(ctx, resolve=False))
        ctx.log.info("reload: new parameters taken for domain %s, which keeps running "
                     "untouched", ident.name)
        return OCF_SUCCESS

    # ---------------------------------------------------------------- stop
    def stop(self, ctx):
        ident = identify(ctx)
        if ident is None:
            return OCF_SUCCESS
        return self._stop(ctx, ident, hypervisor(ctx, ident))

    def _stop(self, ctx, ident, uri):
        from vmceph.stopseq import StopSequence
        return StopSequence(self._domain).run(ctx, ident, uri)

    # ---------------------------------------------------------------- migration
    def migrate_to(self, ctx):
        from vmceph import migration
        early = getattr(self, "_early", None)   # begun by validate for this very action
        early = early[1] if early is not None and early[0] is ctx else None
        return migration.migrate_to(ctx, self._domain, early)

    def migrate_from(self, ctx):
        from vmceph import migration
        # the domain validate parsed (name, UUID, size): migrate_from never looks at the
        # images, so it neither parses the XML again nor resolves the disks (~20-35 ms)
        return migration.migrate_from(ctx, lambda c: self._domain(c, resolve=False))


# ------------------------------------------------------------------ helpers

def running_qemu_clients(dom, facts):
    """(image, address) of the client instances of the domain's QEMU already running here,
    for vmceph.deadclients, when a start finds it running ("already-running"): the one
    watcher at this node's address of each image its QEMU opens through librbd (none or
    several: that image is left out; who is who cannot be told). Pure.

    Why (docs/reliability.md, seed 1206, faults 159-160): an agent SIGKILLed in migrate_to left
    libvirt to finish the migration; Pacemaker, told migrate_to failed, stopped the source
    and started the VM on the target, where the start found it running. Nothing had
    recorded that QEMU's client (no start created it, no migrate_from ran), so when it was
    killed its stop released nothing, and every start refused its lock."""
    from vmceph.safety import LOCAL, ip_of
    kernel = {d.spec for d in dom.guarded_disks if getattr(d, "krbd_client", None)}
    out = []
    for img in facts.images:
        if img.spec in kernel or not img.exists or img.error:
            continue
        here = [w.addr for w in img.watchers
                if getattr(facts.owners.get(ip_of(w.addr)), "state", None) == LOCAL]
        if len(here) == 1:
            out.append((img.spec, here[0]))
    return out


def _warn_unknown_node_names(ctx, static):
    """validate-all: warn about node_addresses names the cluster does not know (issue 10;
    they count as unknown addresses). Silent when Pacemaker cannot be asked."""
    from vmceph import cluster
    try:
        nodes = cluster.Cluster(ctx.deadline, ctx.log).nodes()
    except cluster.ClusterError:
        return
    for sentence in cluster.unknown_node_names(static, nodes):
        ctx.log.warning("%s", sentence)


def raise_for(verdict):
    from vmceph import safety
    if verdict.may_start:
        return
    reason = verdict.summary()
    if verdict.kind == safety.CONFIG:
        raise ConfigError(reason)
    if verdict.kind == safety.PERM:
        raise PermError(reason)
    raise GenericError(reason)


class LenientParams:
    """Parameter values for stop, which must work with a partly invalid configuration:
    a value that does not parse counts as its default."""

    def __init__(self, ctx):
        self.p = ctx.params

    def get(self, name):
        try:
            return getattr(self.p, name)
        except OCFError:
            return self.p.default(name)


def snapshot_file(directory, name):
    """Where the memory of domain ``name`` is saved at stop (parameter snapshot)."""
    return os.path.join(directory, name + ".state") if directory else None


def write_keeping(path, text, st=None, secret=False):
    """Replace the file ``path`` with ``text`` atomically, keeping what an administrator set
    up: a symbolic link stays a link (its target is replaced), the mode, owner and group
    stay (``st``: those to keep when the file is gone, else the file's own). With
    ``secret`` (XML with secrets, VIR_DOMAIN_XML_SECURE) the result is never readable by
    others, whatever the old mode was. The new content goes to a temporary file in the same
    directory, is flushed to disk, and is renamed over the old: a reader sees the old or the
    new file, never a part."""
    import stat
    import tempfile
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        pass
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o600
    if secret:
        mode &= ~0o007
    directory = os.path.dirname(real) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(real) + ".", suffix=".tmp",
                               dir=directory)
    try:
        os.fchmod(fd, mode & 0o600)       # nobody else reads it while it is written
        if st is not None:
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except PermissionError:
                pass
        with os.fdopen(fd, "w") as f:
            fd = None
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, real)
        tmp = None
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _check_transports(p, names=("hypervisor", "remoteuri", "migration_transport")):
    """libvirt's 'ext' transport runs the URI's command= program at every connection
    (every probe and stop): refused unless allow_ext_transport is set (issue 16). Monitor
    and stop check only the URI they connect to (``names``)."""
    if p.allow_ext_transport:
        return
    for name in names:
        if name == "migration_transport":
            if p.migration_transport == "ext":
                raise ConfigError("parameter migration_transport=ext runs a program at every "
                                  "connection; set allow_ext_transport=true to allow it")
            continue
        uri = getattr(p, name) or ""
        if uri.partition("://")[0].partition("+")[2] == "ext":
            raise ConfigError("parameter %s=%s uses libvirt's ext transport, which runs a "
                              "program at every connection; set allow_ext_transport=true to "
                              "allow it" % (name, ocf.shown(uri)))


def xml_error(config, error):
    """The OCF error of a domain XML that cannot be used. A file is this node's copy
    (shared storage, config management, csync2): malformed or truncated here, it may be
    fine on another node, so OCF_ERR_INSTALLED (Pacemaker tries elsewhere), never
    OCF_ERR_CONFIGURED (fatal on every node). A definition in Ceph is the same for every
    node: what is wrong with it is wrong everywhere."""
    from vmceph.defstore import is_uri
    if is_uri(config or ""):
        return ConfigError(str(error))
    return InstalledError("%s (on this node; other nodes may have a good copy)" % error)


def _check_uuid(config, dom):
    from vmceph.inputs import libvirt_uuid
    if dom.uuid and libvirt_uuid(dom.uuid) is None:
        raise ConfigError("domain configuration %s: <uuid>%s</uuid> is not a UUID libvirt "
                          "accepts (32 hexadecimal digits, e.g. "
                          "4dea22b3-1d52-d8f3-2516-782e98ab3fa0)"
                          % (ocf.shown(config), ocf.shown(dom.uuid, 60)))


def hypervisor(ctx, ident=None):
    """This node's libvirt URI: the hypervisor parameter; unset, the URI the domain was
    started with (``ident``, remembered at start: the depth-0 monitor runs no program),
    else the default `virsh uri` answers (virt.default_uri), as ocf:heartbeat:VirtualDomain
    takes it."""
    uri = ctx.params.hypervisor
    if uri:
        return uri
    if ident is not None and ident.uri:
        return ident.uri
    return virt.default_uri(ctx.deadline.at_most(5.0), ctx.log)


def lenient_hypervisor(ctx, ident=None):
    """The URI a stop or probe with an invalid configuration connects to: the configured
    one when it parses and passes the transport rule, else the remembered or default one
    (hypervisor()): never a program named by an 'ext' URI, never a crash on a value
    libvirt cannot encode."""
    try:
        uri = ctx.params.hypervisor
        _check_transports(ctx.params, ("hypervisor",))
    except OCFError:
        uri = None
    if uri:
        return uri
    if ident is not None and ident.uri:
        return ident.uri
    return virt.default_uri(ctx.deadline.at_most(5.0), ctx.log)


def _which(prog):
    for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        if os.access(os.path.join(d, prog), os.X_OK):
            return True
    return False


def run_monitor_scripts(ctx, once):
    """Run every monitor script; with ``once`` a failure fails, otherwise retry until they
    all pass or the deadline."""
    import time
    from vmceph import bounded
    scripts = ctx.params.monitor_scripts.split()
    while True:
        failed = []
        for s in scripts:
            try:
                r = bounded.command([s], ctx.deadline.at_most(30.0), log=ctx.log)
                if r.rc != 0:
                    failed.append("%s (rc %d)" % (s, r.rc))
            except (OSError, bounded.Timeout) as e:
                failed.append("%s (%s)" % (s, e))
        if not failed:
            return
        if once or ctx.deadline.remaining() < 1.0:
            raise GenericError("monitor script failed: %s" % ", ".join(failed))
        time.sleep(1.0)


def start_resources(ctx, hv, dom):
    for net in dom.networks:
        if hv.ensure_network(net):
            ctx.log.info("started libvirt network %s", net)
    for pool in dom.pools:
        if hv.ensure_pool(pool):
            ctx.log.info("started libvirt storage pool %s", pool)


def utilization(ctx, dom):
    """autoset_/unset_utilization_* at start and migrate_from (see the parameters)."""
    p = ctx.params
    if ctx.env.get("OCF_RESOURCE_INSTANCE") is None or not _which("crm_resource"):
        return
    mem_mib = (dom.memory_kib or 0) // 1024
    wanted = [("cpu", p.autoset_utilization_cpu, p.unset_utilization_cpu, dom.vcpus or 1),
              ("host_memory", p.autoset_utilization_host_memory,
               p.unset_utilization_host_memory, mem_mib),
              ("hv_memory", p.autoset_utilization_hv_memory,
               p.unset_utilization_hv_memory, mem_mib)]
    if not any(unset or (autoset and value) for _, autoset, unset, value in wanted):
        return   # nothing to set or remove: no vmceph.cluster import (migrate_from's path)
    from vmceph import bounded
    from vmceph.cluster import Cluster, ClusterError
    cl = Cluster(ctx.deadline, ctx.log)
    for name, autoset, unset, value in wanted:
        try:
            if unset:
                cl.delete_utilization(ctx.instance, name)
            elif autoset and value:
                cl.set_utilization(ctx.instance, name, value)
        except (ClusterError, bounded.Timeout, OSError) as e:  # advisory: never fail start
            ctx.log.warning("utilization %s: %s", name, e)


def main():
    import sys
    sys.exit(ocf.run(RBDVirtualDomain()))
