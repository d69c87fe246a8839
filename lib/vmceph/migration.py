"""Live migration of ocf:vmceph:RBDVirtualDomain: migrate_to and migrate_from, and the
pure part they stand on: the migrate_options parameter, the target's URIs and the
MigrationPlan (destination URI, typed parameters, flags, downtime) handed to libvirt.

The pure part imports nothing of the agent (vmceph.status uses it to show the URI a
migration would use); the actions import rbdvd when they run.
"""

from collections import namedtuple

from vmceph import virt
from vmceph.ocf import OCF_SUCCESS, ConfigError, GenericError, Share

# migrate_options in virsh's spelling (virsh 9.0 `migrate --help`), mapped to what the agent
# hands libvirt itself (migrateToURI3), so that a resource switched from
# ocf:heartbeat:VirtualDomain keeps its options. Values follow the option as '--opt VALUE' or
# '--opt=VALUE'.
MIGRATE_FLAGS = {  # virsh option -> virDomainMigrateFlags (libvirt-domain.h)
    "--tunnelled": 4, "--persistent": 8, "--undefinesource": 16, "--change-protection": 256,
    "--unsafe": 512, "--compressed": 2048, "--abort-on-error": 4096, "--auto-converge": 8192,
    "--rdma-pin-all": 16384, "--postcopy": 32768, "--tls": 65536, "--parallel": 131072,
    "--zerocopy": 1048576,
}
MIGRATE_OPTIONS = MIGRATE_FLAGS   # the name older callers import
VIR_MIGRATE_POSTCOPY = 32768
VIR_MIGRATE_TUNNELLED = 4
_INT = ("integer", 0, 2 ** 31 - 1)
_ULL = ("integer", 0, 2 ** 63 - 1)
MIGRATE_PARAMS = {  # virsh option taking a value -> (typed parameter, kind)
    "--bandwidth": ("bandwidth", _INT),              # MiB/s; wins over migration_speed
    "--postcopy-bandwidth": ("bandwidth.postcopy", _ULL),
    "--parallel-connections": ("parallel.connections", _INT),
    "--tls-destination": ("tls.destination", "text"),
    "--comp-methods": ("compression", "list"),       # mt, xbzrle (comma-separated)
    "--comp-mt-level": ("compression.mt.level", _INT),
    "--comp-mt-threads": ("compression.mt.threads", _INT),
    "--comp-mt-dthreads": ("compression.mt.dthreads", _INT),
    "--comp-xbzrle-cache": ("compression.xbzrle.cache", _ULL),
    "--auto-converge-initial": ("auto_converge.initial", _INT),
    "--auto-converge-increment": ("auto_converge.increment", _INT),
    "--graphicsuri": ("graphics_uri", "text"),
    "--listen-address": ("listen_address", "text"),
}
# always done (--live, --p2p), or virsh's own display (--verbose: the agent logs progress)
MIGRATE_IMPLIED = ("--live", "--p2p", "--peer2peer", "--verbose")
_SHARED = ("the disks are RBD images every node reaches: nothing to copy, and a copy would "
           "have the target write the images while the source still runs")
MIGRATE_REFUSED = {  # option -> why, and what to use instead
    "--offline": "migrate_to moves a running domain live; drop it",
    "--direct": "the agent migrates peer-to-peer (libvirtd to libvirtd); drop it",
    "--suspend": "the guest would arrive paused and the cluster would take it for failed; "
                 "drop it",
    "--copy-storage-all": _SHARED, "--copy-storage-inc": _SHARED,
    "--copy-storage-synchronous-writes": _SHARED, "--migrate-disks": _SHARED,
    "--disks-port": _SHARED, "--disks-uri": _SHARED,
    "--postcopy-resume": "it recovers a failed post-copy migration by hand (virsh migrate "
                         "--postcopy-resume), it does not start one",
    "--dname": "the cluster finds the domain by the name in its config; rename it there",
    "--xml": "the domain definition is the config parameter; change it there",
    "--persistent-xml": "the domain definition is the config parameter; change it there",
    "--domain": "the agent names the domain itself", "--desturi": "set remoteuri instead",
}
POSTCOPY_ALONE = ("--postcopy alone only allows post-copy, which then starts only when "
                  "someone runs 'virsh migrate-postcopy' during the job; say when the agent "
                  "switches: add --postcopy-after-precopy (after the first pass of pre-copy) "
                  "or --timeout SECONDS --timeout-postcopy")
POSTCOPY_REFUSED = POSTCOPY_ALONE   # the name older callers import
VIR_MIGRATE_LIVE = 1
VIR_MIGRATE_PEER2PEER = 2
DEFAULT_URI = virt.DEFAULT_URI


class MigrateOptions(namedtuple("MigrateOptions", "flags params uri switch")):
    """migrate_options read: flags, typed parameters, the --migrateuri value (None) and
    the virt.Switch (None) of --timeout / --postcopy-after-precopy."""
    __slots__ = ()


def _value(kind, text):
    if kind == "text":
        if not text or any(c.isspace() for c in text):
            raise ValueError("needs a value")
        return text
    if kind == "list":
        items = [x for x in text.split(",") if x]
        if not items:
            raise ValueError("needs a comma-separated list")
        return items
    try:
        n = int(text, 10)
    except ValueError:
        raise ValueError("needs a whole number, not %r" % text) from None
    if not kind[1] <= n <= kind[2]:
        raise ValueError("must be %d to %d" % (kind[1], kind[2]))
    return n


def read_migrate_options(text):
    """MigrateOptions of the migrate_options parameter; ConfigError naming the option and
    what to use instead for anything this agent cannot honour."""
    flags, params, uri, timeout, timeout_action, after_precopy = 0, {}, None, None, None, False
    words = (text or "").split()
    i = 0

    def fail(why):
        raise ConfigError("migrate_options: %s" % why)
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        takes_value = name in MIGRATE_PARAMS or name in ("--migrateuri", "--timeout")
        value = None
        if takes_value:
            if eq:
                value = inline
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                value = words[i + 1]
                i += 1
            else:
                fail("%s needs a value (%s VALUE)" % (name, name))
        elif eq:
            fail("%s takes no value" % name)
        i += 1
        if name in MIGRATE_FLAGS:
            flags |= MIGRATE_FLAGS[name]
        elif name in MIGRATE_IMPLIED:
            pass
        elif name == "--postcopy-after-precopy":
            after_precopy = True
        elif name in ("--timeout-suspend", "--timeout-postcopy"):
            timeout_action = name[len("--timeout-"):]
        elif name == "--migrateuri":
            uri = value
        elif name == "--timeout":
            try:
                timeout = _value(("integer", 1, 2 ** 31 - 1), value)
            except ValueError as e:
                fail("--timeout %s" % e)
        elif name in MIGRATE_PARAMS:
            key, kind = MIGRATE_PARAMS[name]
            try:
                params[key] = _value(kind, value)
            except ValueError as e:
                fail("%s %s" % (name, e))
        elif name in MIGRATE_REFUSED:
            fail("%s is not supported by RBDVirtualDomain: %s" % (name, MIGRATE_REFUSED[name]))
        else:
            fail("%r is not supported by RBDVirtualDomain (not an option of virsh migrate "
                 "it knows; supported: %s; --migrateuri, --timeout and %s with a value)"
                 % (word, " ".join(sorted(MIGRATE_FLAGS) + sorted(MIGRATE_IMPLIED)),
                    " ".join(sorted(MIGRATE_PARAMS))))
    if timeout_action and timeout is None:
        fail("--timeout-%s needs --timeout SECONDS" % timeout_action)
    if after_precopy or timeout_action == "postcopy":
        flags |= VIR_MIGRATE_POSTCOPY      # virsh requires --postcopy with these too
    elif flags & VIR_MIGRATE_POSTCOPY:
        fail(POSTCOPY_ALONE)
    if flags & VIR_MIGRATE_TUNNELLED and uri:
        fail("--tunnelled sends the stream through libvirtd's connection: --migrateuri "
             "does not apply; drop one")
    switch = None
    if timeout is not None or after_precopy:
        switch = virt.Switch(timeout, timeout_action or "suspend", after_precopy)
    return MigrateOptions(flags, params, uri, switch)


def parse_migrate_options(text):
    """(flags, migrateuri) of migrate_options (read_migrate_options has everything)."""
    o = read_migrate_options(text)
    return o.flags, o.uri


def target_host(p, target):
    """The host name of the target for URIs, with migration_network_suffix applied before
    the first dot of a fully qualified name."""
    suffix = p.migration_network_suffix or ""
    if not suffix:
        return target
    head, dot, rest = target.partition(".")
    return head + suffix + dot + rest


class MigrationPlan(namedtuple("MigrationPlan", "dconnuri params flags downtime switch",
                               defaults=(None,))):
    """What migrate_to hands to libvirt: the destination's libvirt URI, the typed
    parameters and flags of migrateToURI3, the maximum downtime (ms; 0 keeps libvirt's)
    set once the job runs, and the virt.Switch of --timeout / --postcopy-after-precopy
    (None). Computed from the parameters alone (no I/O)."""
    __slots__ = ()


def migration_plan(p, target, local_uri=None):
    """The MigrationPlan of a live migration to node ``target``."""
    dconnuri, params, flags = migration_args(p, target, local_uri)
    switch = read_migrate_options(p.migrate_options).switch
    return MigrationPlan(dconnuri, params, flags, p.migration_downtime, switch)


def split_uri(uri):
    """(driver, transport, user, host, port, path, query) of a libvirt URI
    'driver[+transport]://[user@]host[:port]/path[?query]'; '' for what it lacks."""
    scheme, _, rest = uri.partition("://")
    driver, _, transport = scheme.partition("+")
    authority, slash, tail = rest.partition("/")
    path, q, query = (slash + tail).partition("?")
    user, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):             # [IPv6]:port
        host, _, port = hostport[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    return driver, transport, user, host, port, path, (q + query)


def remote_uri(local_uri, host, transport="", user=""):
    """The URI of ``host``'s libvirtd for a migration from a node whose own URI is
    ``local_uri``: its driver, port, path and query kept (qemu:///session migrates to the
    target's session daemon, a port stays the port), the host replaced, the transport
    ``transport`` or else the local one ('unix' cannot reach another host: dropped, libvirt's
    default then applies)."""
    driver, own_transport, _, _, port, path, query = split_uri(local_uri)
    transport = transport or ("" if own_transport == "unix" else own_transport)
    if ":" in host:
        host = "[%s]" % host
    return "%s%s://%s%s%s%s%s" % (driver or "qemu", "+" + transport if transport else "",
                                  user + "@" if user else "", host,
                                  ":" + port if port else "", path or "/system", query)


def migration_args(p, target, local_uri=None):
    """(destination libvirt URI, typed params, flags) for migrateToURI3. ``local_uri``: this
    node's libvirt URI (the hypervisor parameter, or the default libvirt answered)."""
    host = target_host(p, target)
    if p.remoteuri:
        dconnuri = p.remoteuri.replace("%n", target)
    else:
        dconnuri = remote_uri(local_uri or p.hypervisor or DEFAULT_URI, host,
                              p.migration_transport, p.migration_user)
    opts = read_migrate_options(p.migrate_options)
    flags = opts.flags | VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER
    params = {}
    if p.migration_speed:
        params[virt.MIGRATE_PARAM_BANDWIDTH] = int(p.migration_speed)
    params.update(opts.params)             # --bandwidth wins, as the later virsh call did
    migrateuri = p.migrateuri or opts.uri
    if flags & VIR_MIGRATE_TUNNELLED:
        # the stream goes through libvirtd's own connection: no migration URI applies
        if p.migrateuri or p.migrateport:
            raise ConfigError("migrate_options --tunnelled sends the stream through "
                              "libvirtd's connection: unset %s"
                              % ("migrateuri" if p.migrateuri else "migrateport"))
    elif migrateuri:
        params[virt.MIGRATE_PARAM_URI] = migrateuri.replace("%n", target)
    elif p.migrateport or host != target:
        # the stream goes to the migration network's name too (libvirt picks the port
        # when none is given)
        params[virt.MIGRATE_PARAM_URI] = "tcp://%s" % host + (
            ":%d" % p.migrateport if p.migrateport else "")
    return dconnuri, params, flags


def job_summary(stats):
    parts = []
    for key, label, scale, unit in (("time_elapsed", "took", 1, "ms"),
                                    ("downtime", "downtime", 1, "ms"),
                                    ("memory_processed", "memory sent", 1 / 1048576.0, "MiB")):
        if key in stats:
            parts.append("%s %.0f %s" % (label, stats[key] * scale, unit))
    return ", ".join(parts) or "no statistics"


# How long migrate_to waits for attrd's answer about the target's health (the query runs
# while the facts are gathered); Cluster caps the attrd_updater run itself at 10 s.
HEALTH_QUERY_CAP_S = 10.0


def health_query(ctx, target):
    """The target's health attribute asked of attrd in a thread (bounded.Background), started
    before the facts are gathered: attrd_updater (~10-18 ms, make bench) then runs while Ceph
    and crm_mon are asked instead of after them. node_health takes its answer."""
    from vmceph import bounded
    from vmceph.cluster import Cluster
    name = ctx.params.health_attribute
    cluster = Cluster(ctx.deadline, ctx.log)
    return bounded.Background(lambda: cluster.query_attribute(name, target),
                              "attrd_updater -n %s -N %s" % (name, target))


def head_start(ctx):
    """What migrate_to asks before it decides, begun as soon as validate has checked the
    parameters (rbdvd.validate), while it imports libvirt and lxml and parses the domain:
    the cluster view and the Ceph connection (facts.HeadStart) and the target's health
    (health_query). Read-only asks; nothing is decided or changed until migrate_to has
    every answer. None without a target (migrate_to then fails before any I/O)."""
    from vmceph import facts
    target = ctx.meta("migrate_target")
    if not target:
        return None
    return facts.HeadStart(ctx.params, ctx.deadline, ctx.log, ctx.node_name), \
        health_query(ctx, target)


def node_health(ctx, g, target, query=None):
    """The target's health attribute. ``crm_mon -A`` never lists node attributes whose
    name starts with '#' (it filters them, like fail-counts), so '#health-ceph' is not in
    the crm_mon view: ask attrd for it (``query``: health_query's answer, else asked now).
    None when it cannot be told (attrd_updater missing, failing or not answering in time)."""
    name = ctx.params.health_attribute
    value = g.node_attribute(target, name)
    if value is not None:
        return value
    from vmceph import bounded
    try:
        if query is not None:
            return query.result(ctx.deadline.at_most(HEALTH_QUERY_CAP_S))
        from vmceph.cluster import Cluster
        return Cluster(ctx.deadline, ctx.log).query_attribute(name, target)
    except (OSError, bounded.Timeout) as e:
        ctx.log.warning("cannot read node attribute %s of %s: %s", name, target, e)
        return None


# ------------------------------------------------------------------ the actions

def migrate_to(ctx, domain_of, early=None):
    """The migrate_to action: decide (safety.decide_migrate), stamp a generation, live-migrate
    by the MigrationPlan. ``domain_of(ctx)`` is the agent's parsed, resolved domain;
    ``early``: head_start's asks, begun during validate (else begun here)."""
    target = ctx.meta("migrate_target")
    if not target:
        raise ConfigError("migrate_to needs the target node "
                          "(OCF_RESKEY_CRM_meta_migrate_target); Pacemaker sets it")
    taken = []
    try:
        return _migrate_to(ctx, domain_of, target, early, taken)
    finally:
        if early is not None and not taken:   # refused before gathering (not running here)
            early[0].abandon()


def _migrate_to(ctx, domain_of, target, early, taken):
    from vmceph import facts, rbdvd, safety
    dom = domain_of(ctx)
    p = ctx.params
    ident = rbdvd.recall(ctx)
    local_uri = rbdvd.hypervisor(ctx, ident)
    hv = virt.Hypervisor(local_uri, ctx.deadline, ctx.log)
    try:
        try:
            vdom = hv.lookup(dom.name, dom.uuid)
            state, _ = hv.state_of(vdom)
        except virt.DomainNotFound:
            state = virt.SHUTOFF
        except virt.VirtError as e:
            raise GenericError("libvirt: %s" % e) from None
        if state not in virt.ACTIVE_STATES:
            raise GenericError("domain %s is not running on this node: nothing to migrate"
                               % dom.name)
        if early is not None:
            head, query = early
            taken.append(True)
        else:
            head, query = None, health_query(ctx, target)  # asked while the facts are gathered
        with facts.gather(ctx, dom, domain_active=True, early=head) as g:
            health = node_health(ctx, g, target, query)
            verdict = safety.decide_migrate(g.facts, target, health)
            ctx.log.info("migrate_to %s decision: %s (%s)", target, verdict.kind,
                         verdict.summary())
            rbdvd.raise_for(verdict)
            _stamp_migration(ctx, g, target)
        plan = migration_plan(p, target, local_uri)
        from vmceph import configsave
        if configsave.wanted(p):   # as VirtualDomain: the file follows the running guest
            configsave.save(ctx, hv, vdom, rbdvd.Identity(
                dom.name, dom.uuid, ident.config if ident else p.config), "migrate_to")
        if p.start_resources:
            _start_target_resources(ctx, plan.dconnuri, dom)
        ctx.log.info("live-migrating %s to %s (%s)", dom.name, target, plan.dconnuri)
        ctx.log.info("migration of %s: flags %#x, parameters %s", dom.name, plan.flags,
                     ", ".join("%s=%s" % kv for kv in sorted(plan.params.items())) or "none")
        try:
            stats = virt.migrate(hv, vdom, plan.dconnuri, plan.params, plan.flags,
                                 plan.downtime, ctx.log, switch=plan.switch)
        except virt.MigrationTimeout as e:
            raise GenericError(str(e)) from None
        except virt.VirtError as e:
            raise GenericError("live migration of %s to %s failed: %s"
                               % (dom.name, target, e)) from None
        if stats:
            ctx.log.info("migration of %s done: %s", dom.name, job_summary(stats))
        # This QEMU handed its images over and exits cleanly: the stop that follows here
        # must not take it for a dead QEMU and open a Ceph session to look for what it left
        # (deadclients.release), on the migration's path.
        from vmceph import deadclients
        deadclients.forget_record(ctx)
    finally:
        hv.close()
    return OCF_SUCCESS


def _start_target_resources(ctx, dconnuri, dom):
    """start_resources before a migration: the networks and pools the domain needs must
    run where it goes, so they are started through the target's libvirtd (the URI the
    migration itself uses), not this node's."""
    from vmceph import rbdvd
    target_hv = virt.Hypervisor(dconnuri, ctx.deadline, ctx.log)
    try:
        rbdvd.start_resources(ctx, target_hv, dom)
    except virt.VirtError as e:
        raise GenericError("start_resources: cannot start the networks and pools of %s "
                           "on the target (%s): %s" % (dom.name, dconnuri, e)) from None
    finally:
        target_hv.close()


def _stamp_migration(ctx, g, target):
    """A new generation before the guest moves (vmceph.generation): best-effort, the
    start that began this run has stamped one already."""
    from vmceph import generation
    from vmceph.ceph import CephError
    specs = [i.spec for i in g.facts.images]
    if not specs:
        return
    try:
        g.session.image_meta_set(specs[0], generation.META_KEY, generation.new_token(
            ctx.node_name, "migrate to " + target))
    except CephError as e:
        ctx.log.warning("cannot record the migration in the metadata of %s: %s",
                        specs[0], e)


def migrate_from(ctx, domain_of):
    """The migrate_from action: remember the identity, wait until the domain runs here."""
    import time
    from vmceph import rbdvd
    source = ctx.meta("migrate_source")
    if not source:
        raise ConfigError("migrate_from needs the source node "
                          "(OCF_RESKEY_CRM_meta_migrate_source); Pacemaker sets it")
    dom = domain_of(ctx)
    uri = rbdvd.hypervisor(ctx)
    ident = rbdvd.Identity(dom.name, dom.uuid, ctx.params.config, uri)
    rbdvd.remember(ctx, ident)
    # Which client instances are the arrived QEMU's, for a stop that later finds it dead
    # (deadclients): asked of Ceph beside the rest of this action, waited for at its end.
    from vmceph import bounded, deadclients
    arrival = bounded.Background(lambda: deadclients.record_arrival(
        ctx, ctx.params, dom, Share(ctx.deadline, cap=ARRIVAL_CAP_S)),
        "recording the arrived QEMU's clients")
    hv = virt.Hypervisor(uri, ctx.deadline, ctx.log)
    try:
        while True:
            try:
                state, _ = hv.state(dom.name, dom.uuid)
            except virt.VirtError as e:
                raise GenericError("libvirt: %s" % e) from None
            if state in (virt.RUNNING, virt.BLOCKED):
                break
            if ctx.deadline.expired():
                raise GenericError("domain %s did not arrive running from %s (state %s)"
                                   % (dom.name, source, virt.STATE_NAMES.get(state, state)))
            time.sleep(0.2)
        try:
            vdom = hv.lookup(dom.name, dom.uuid)
            # KEEP_COMPLETED: leave them for `virsh domjobinfo --completed` too
            stats = hv.job_stats(vdom, completed=True)
            if stats:
                ctx.log.info("migration of %s from %s: %s", dom.name, source,
                             job_summary(stats))
        except virt.VirtError as e:  # statistics are informational only
            ctx.log.debug("no completed job statistics: %s", e)
        from vmceph import configsave
        if configsave.wanted(ctx.params):
            try:
                configsave.save(ctx, hv, hv.lookup(dom.name, dom.uuid), ident, "migrate_from")
            except virt.VirtError as e:
                ctx.log.warning("migrate_from: cannot save the configuration: %s", e)
    finally:
        hv.close()
    if ctx.params.monitor_scripts:
        rbdvd.run_monitor_scripts(ctx, once=False)
    rbdvd.utilization(ctx, dom)
    try:
        if arrival.result(ctx.deadline.at_most(ARRIVAL_CAP_S + 1.0)) is False:
            ctx.log.info("client instances of %s's arrived QEMU not recorded: a stop that "
                         "finds it dead cannot release them", dom.name)
    except Exception as e:  # noqa: BLE001 - best-effort, never fails the migration
        ctx.log.warning("recording the client instances of %s's arrived QEMU: %s",
                        dom.name, e)
    return OCF_SUCCESS


# migrate_from waits at most this long for Ceph to name the arrived QEMU's clients.
ARRIVAL_CAP_S = 5.0
