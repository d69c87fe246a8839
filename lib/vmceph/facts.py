"""Gathering the facts of the start decision, and carrying out its recoveries.

Shared by the agent (start, migrate_to, deep monitor) and the ``vmceph check`` command, so
that what an administrator sees is exactly what the agent decides on.
"""

import socket
import time

from vmceph import cluster as pcmk
from vmceph.ceph import CephConfigError, CephPermission, CephSession, CephUnavailable
from vmceph.ocf import ConfigError, GenericError, InstalledError, PermError
from vmceph.safety import Facts, Locker


class Gathered:
    """Facts plus what produced them; a context manager that closes the Ceph session."""

    def __init__(self, facts, nodes, session, local_node, membership_source):
        self.facts = facts
        self.nodes = nodes
        self.session = session
        self.local_node = local_node
        self.membership_source = membership_source

    def node_attribute(self, node, name):
        info = self.nodes.get(node)
        return info.attributes.get(name) if info is not None else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.session is not None:
            self.session.close()
        return False


def cluster_view(ctx_params, deadline, log, on_node=None):
    """(nodes, local node name, source). Static ``membership`` wins; else Pacemaker; if
    Pacemaker cannot be asked, membership is unknown ({}), see cluster.owners_map."""
    view = pcmk.Cluster(deadline, log)
    if ctx_params.membership:
        nodes = pcmk.parse_membership(ctx_params.membership)
        try:
            view.nodes()
        except pcmk.ClusterError:
            return nodes, on_node or socket.gethostname().split(".")[0], "membership parameter"
        # A cluster answers: its view of who is alive and who is fenced must never be
        # overridden by a static one (a leftover from a test would be dangerous).
        raise ConfigError("the membership parameter is only for running outside a cluster "
                          "(tests, vmceph check), and Pacemaker answers here: remove it")
    try:
        nodes = view.nodes()
        source = "Pacemaker (crm_mon)"
    except pcmk.ClusterError as e:
        if log:
            log.warning("cluster membership unknown (%s): every other node counts as a live "
                        "member", e)
        nodes, source = {}, "unknown (%s)" % e
    return nodes, on_node or view.local_name(), source


def gather(ctx, dom, domain_active, images=True):
    return gather_with(ctx.params, ctx.deadline, ctx.log, dom, domain_active, images,
                       on_node=ctx.node_name)


def gather_with(p, deadline, log, dom, domain_active, images=True, on_node=None):
    from vmceph.safety import UNKNOWN_BLOCKLIST, UNKNOWN_REFUSE
    try:
        nodes, local, source = cluster_view(p, deadline, log, on_node)
        static = pcmk.parse_node_addresses(p.node_addresses)
    except ValueError as e:  # a deep monitor meets them unvalidated
        raise ConfigError(str(e)) from None
    session = CephSession(p.ceph_conf, p.ceph_user, p.ceph_keyring, deadline, log)
    t0 = time.monotonic()
    policy = UNKNOWN_BLOCKLIST if p.unknown_client_policy == "blocklist" else UNKNOWN_REFUSE

    def facts(quorum_ok, detail, imgs=(), owners=None):
        return Facts(quorum_ok=quorum_ok, quorum_detail=detail, images=tuple(imgs),
                     owners=owners or {}, local_node=local, domain_active_here=domain_active,
                     unknown_policy=policy)
    try:
        session.connect()
    except CephUnavailable as e:
        return Gathered(facts(False, "%s (%.1f s spent)" % (e, time.monotonic() - t0)),
                        nodes, None, local, source)
    except CephPermission as e:
        raise PermError(str(e)) from None
    except CephConfigError as e:
        raise InstalledError(str(e)) from None
    try:
        ok, detail, _, _ = session.quorum()
        if not ok:
            return Gathered(facts(False, "%s (%.1f s spent)" % (detail, time.monotonic() - t0)),
                            nodes, session, local, source)
        imgs = [session.inspect(d.spec) for d in dom.guarded_disks] if images else []
        local_ips = session.client_addrs()
        owners = pcmk.owners_map(local, local_ips, nodes, static,
                                 resolver=lambda n: pcmk.resolve(n, deadline.at_most(2.0)))
    except CephUnavailable as e:
        session.close()
        return Gathered(facts(False, "%s (%.1f s spent)" % (e, time.monotonic() - t0)),
                        nodes, None, local, source)
    except CephPermission as e:
        session.close()
        raise PermError(str(e)) from None
    except BaseException:
        session.close()
        raise
    return Gathered(facts(True, detail, imgs, owners), nodes, session, local, source)


def recover(ctx, session, recoveries):
    """Blocklist every client of the verdict (with expiry), then break the locks they hold.

    Blocklisting first: a client that is only cut off, not dead, must not write again once
    its lock is gone (CEPH-FACTS.md: the holder's later I/O fails with ConnectionShutdown).
    Each address is blocklisted once, however many images it holds: every blocklist change
    is a monitor round (~1 s here), the lock breaks themselves take ~10-100 ms.
    """
    expire = ctx.params.blocklist_expire
    try:
        done = set()
        for r in recoveries:
            if r.addr in done:
                continue
            t0 = time.monotonic()
            session.blocklist_add(r.addr, expire)
            done.add(r.addr)
            ctx.log.warning("blocklisted %s for %d s in %.2f s: %s", r.addr, expire,
                            time.monotonic() - t0, r.describe())
        for r in recoveries:
            if r.cookie:
                t0 = time.monotonic()
                broken = session.break_lock(r.image, Locker(r.entity, r.cookie, r.addr))
                ctx.log.warning("%s exclusive lock of %s held by %s at %s (node %s) in %.2f s",
                                "broke the" if broken else "no longer found the", r.image,
                                r.entity, r.addr, r.node or "unknown", time.monotonic() - t0)
    except CephPermission as e:
        raise PermError("cannot recover: %s (the Ceph user needs mon 'profile rbd' to add "
                        "blocklist entries)" % e) from None
    except CephUnavailable as e:
        raise GenericError("cannot recover the images of a dead client: %s" % e) from None
