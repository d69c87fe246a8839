"""Live migration of ocf:vmceph:RBDVirtualDomain: migrate_to and migrate_from, and the
pure part they stand on: the migrate_options parameter, the target's URIs and the
MigrationPlan (destination URI, typed parameters, flags, downtime) handed to libvirt.

The pure part imports nothing of the agent (vmceph.status uses it to show the URI a
migration would use); the actions import rbdvd when they run.
"""

from collections import namedtuple

from vmceph import virt
from vmceph.ocf import OCF_SUCCESS, ConfigError, GenericError

MIGRATE_OPTIONS = {  # virsh spelling -> virDomainMigrateFlags
    "--unsafe": 512, "--compressed": 2048, "--auto-converge": 8192,
    "--tls": 65536, "--abort-on-error": 4096, "--persistent": 8, "--undefinesource": 16,
}
# Accepted by virsh, refused here with a reason of its own: the flag only allows post-copy,
# which starts when migrate-postcopy is called during the job; this agent never calls it.
POSTCOPY_REFUSED = ("--postcopy is not supported: post-copy needs migrate-postcopy during "
                    "the job, which RBDVirtualDomain does not do")
VIR_MIGRATE_LIVE = 1
VIR_MIGRATE_PEER2PEER = 2


def parse_migrate_options(text):
    """(flags, migrateuri) from the migrate_options parameter; ConfigError on anything
    this agent cannot honour."""
    flags, uri = 0, None
    words = text.split()
    i = 0
    while i < len(words):
        w = words[i]
        if w in MIGRATE_OPTIONS:
            flags |= MIGRATE_OPTIONS[w]
        elif w == "--migrateuri" and i + 1 < len(words):
            uri = words[i + 1]
            i += 1
        elif w.startswith("--migrateuri="):
            uri = w.split("=", 1)[1]
        elif w in ("--live", "--p2p", "--peer2peer"):
            pass  # always done
        elif w == "--postcopy":
            raise ConfigError("migrate_options: " + POSTCOPY_REFUSED)
        else:
            raise ConfigError("migrate_options: %r is not supported by RBDVirtualDomain "
                              "(supported: %s, --migrateuri URI)"
                              % (w, " ".join(sorted(MIGRATE_OPTIONS))))
        i += 1
    return flags, uri


def target_host(p, target):
    """The host name of the target for URIs, with migration_network_suffix applied before
    the first dot of a fully qualified name."""
    suffix = p.migration_network_suffix or ""
    if not suffix:
        return target
    head, dot, rest = target.partition(".")
    return head + suffix + dot + rest


class MigrationPlan(namedtuple("MigrationPlan", "dconnuri params flags downtime")):
    """What migrate_to hands to libvirt: the destination's libvirt URI, the typed
    parameters and flags of migrateToURI3, and the maximum downtime (ms; 0 keeps libvirt's)
    set once the job runs. Computed from the parameters alone (no I/O)."""
    __slots__ = ()


def migration_plan(p, target):
    """The MigrationPlan of a live migration to node ``target``."""
    dconnuri, params, flags = migration_args(p, target)
    return MigrationPlan(dconnuri, params, flags, p.migration_downtime)


def migration_args(p, target):
    """(destination libvirt URI, typed params, flags) for migrateToURI3."""
    host = target_host(p, target)
    if p.remoteuri:
        dconnuri = p.remoteuri.replace("%n", target)
    elif p.migration_transport:
        user = (p.migration_user + "@") if p.migration_user else ""
        dconnuri = "qemu+%s://%s%s/system" % (p.migration_transport, user, host)
    else:
        base = p.hypervisor
        user = (p.migration_user + "@") if p.migration_user else ""
        if ":///" in base:
            dconnuri = base.replace(":///", "://%s%s/" % (user, host), 1)
        else:
            dconnuri = "qemu://%s%s/system" % (user, host)
    flags, opt_uri = parse_migrate_options(p.migrate_options or "")
    flags |= VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER
    params = {}
    migrateuri = p.migrateuri or opt_uri
    if migrateuri:
        params[virt.MIGRATE_PARAM_URI] = migrateuri.replace("%n", target)
    elif p.migrateport or host != target:
        # the stream goes to the migration network's name too (libvirt picks the port
        # when none is given)
        params[virt.MIGRATE_PARAM_URI] = "tcp://%s" % host + (
            ":%d" % p.migrateport if p.migrateport else "")
    if p.migration_speed:
        params[virt.MIGRATE_PARAM_BANDWIDTH] = int(p.migration_speed)
    return dconnuri, params, flags


def job_summary(stats):
    parts = []
    for key, label, scale, unit in (("time_elapsed", "took", 1, "ms"),
                                    ("downtime", "downtime", 1, "ms"),
                                    ("memory_processed", "memory sent", 1 / 1048576.0, "MiB")):
        if key in stats:
            parts.append("%s %.0f %s" % (label, stats[key] * scale, unit))
    return ", ".join(parts) or "no statistics"


def node_health(ctx, g, target):
    """The target's health attribute. ``crm_mon -A`` never lists node attributes whose
    name starts with '#' (it filters them, like fail-counts), so '#health-ceph' is not in
    the crm_mon view: ask attrd for it. None when it cannot be told."""
    name = ctx.params.health_attribute
    value = g.node_attribute(target, name)
    if value is not None:
        return value
    from vmceph import bounded
    from vmceph.cluster import Cluster
    try:
        return Cluster(ctx.deadline, ctx.log).query_attribute(name, target)
    except (OSError, bounded.Timeout) as e:
        ctx.log.warning("cannot read node attribute %s of %s: %s", name, target, e)
        return None


# ------------------------------------------------------------------ the actions

def migrate_to(ctx, domain_of):
    """The migrate_to action: decide (safety.decide_migrate), stamp a generation, live-migrate
    by the MigrationPlan. ``domain_of(ctx)`` is the agent's parsed, resolved domain."""
    from vmceph import facts, rbdvd, safety
    target = ctx.meta("migrate_target")
    if not target:
        raise ConfigError("migrate_to needs the target node "
                          "(OCF_RESKEY_CRM_meta_migrate_target); Pacemaker sets it")
    dom = domain_of(ctx)
    p = ctx.params
    hv = virt.Hypervisor(p.hypervisor, ctx.deadline, ctx.log)
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
        with facts.gather(ctx, dom, domain_active=True) as g:
            health = node_health(ctx, g, target)
            verdict = safety.decide_migrate(g.facts, target, health)
            ctx.log.info("migrate_to %s decision: %s (%s)", target, verdict.kind,
                         verdict.summary())
            rbdvd.raise_for(verdict)
            _stamp_migration(ctx, g, target)
        if p.start_resources:
            rbdvd.start_resources(ctx, hv, dom)
        plan = migration_plan(p, target)
        ctx.log.info("live-migrating %s to %s (%s)", dom.name, target, plan.dconnuri)
        try:
            stats = virt.migrate(hv, vdom, plan.dconnuri, plan.params, plan.flags,
                                 plan.downtime, ctx.log)
        except virt.MigrationTimeout as e:
            raise GenericError(str(e)) from None
        except virt.VirtError as e:
            raise GenericError("live migration of %s to %s failed: %s"
                               % (dom.name, target, e)) from None
        if stats:
            ctx.log.info("migration of %s done: %s", dom.name, job_summary(stats))
    finally:
        hv.close()
    return OCF_SUCCESS


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
    rbdvd.remember(ctx, rbdvd.Identity(dom.name, dom.uuid, ctx.params.config))
    hv = virt.Hypervisor(ctx.params.hypervisor, ctx.deadline, ctx.log)
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
    finally:
        hv.close()
    if ctx.params.monitor_scripts:
        rbdvd.run_monitor_scripts(ctx, once=False)
    rbdvd.utilization(ctx, dom)
    return OCF_SUCCESS
