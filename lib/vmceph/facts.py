"""Gathering the facts of the start decision, and carrying out its recoveries.

Shared by the agent (start, migrate_to, deep monitor) and the ``vmceph check`` command, so
that what an administrator sees is exactly what the agent decides on.
"""

import socket
import time

from vmceph import bounded
from vmceph import cluster as pcmk
from vmceph.ceph import CephConfigError, CephPermission, CephSession, CephUnavailable
from vmceph.ocf import ConfigError, GenericError, InstalledError, PermError
from vmceph.safety import Facts


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
                        "member and nothing is recovered", e)
        nodes, source = {}, "unknown (%s)" % e
    return nodes, on_node or view.local_name(), source


class HeadStart:
    """The two slow, read-only asks of a later gather begun early: Pacemaker's view of the
    members (crm_mon, cibadmin: another process) and the Ceph connection, each in a
    bounded.Background. migrate_to begins them while validate imports libvirt and lxml and
    parses the domain (~60-100 ms, make bench), which they then overlap instead of
    following; the decision still waits for both, and for the images' inspection, which
    needs the parsed domain. Nothing is decided or written before gather takes them."""

    def __init__(self, p, deadline, log, on_node=None):
        import threading
        self._lock = threading.Lock()
        self._abandoned = False
        self._session = None
        self.t0 = time.monotonic()
        self.view = bounded.Background(lambda: cluster_view(p, deadline, log, on_node),
                                       "cluster view")
        self.ceph = bounded.Background(lambda: self._connect(p, deadline, log),
                                       "Ceph connection")

    def _connect(self, p, deadline, log):
        session, why = _connect(p, deadline, log)
        with self._lock:   # either abandon() sees the session, or this sees abandon()
            if self._abandoned and session is not None:
                session.close()
                return None, "abandoned"
            self._session = session
        return session, why

    def connection(self, deadline):
        """(session, None) or (None, why), as _connect; its errors raised here."""
        try:
            return self.ceph.result(deadline.remaining())
        except bounded.Timeout as e:
            return None, str(e)

    def abandon(self):
        """The action stopped before a gather took this: the session is closed, now if it
        is connected, else by the connecting thread when it is."""
        with self._lock:
            self._abandoned = True
            session, self._session = self._session, None
        if session is not None:
            session.close()


def gather(ctx, dom, domain_active, images=True, early=None):
    dead = (frozenset(), "")
    if ctx.action == "start" and not domain_active:
        # our previous QEMU's client instances, if that process is gone (deadclients)
        from vmceph import deadclients
        dead = deadclients.recall_dead(ctx)
    return gather_with(ctx.params, ctx.deadline, ctx.log, dom, domain_active, images,
                       on_node=ctx.node_name, retry_watchless=ctx.action == "start",
                       dead_local=dead, early=early)


# DNS lookups of every node name together, at most this long (they run in parallel).
DNS_CAP_S = 2.0
# How long a start looks again at lock holders with no watch on a node that may be alive.
WATCHLESS_RETRY_CAP_S = 20.0
# How long a start looks again at watchers holding no lock on a live member: Ceph's
# osd_client_watch_timeout (30 s; CEPH-FACTS: a killed client's watch stays that long)
# and a margin for the OSD's timer tick (safety.ImageView.lingering).
LINGER_RETRY_CAP_S = 35.0


def gather_with(p, deadline, log, dom, domain_active, images=True, on_node=None,
                retry_watchless=False, dead_local=(frozenset(), ""), early=None):
    """Facts for the decision. Pacemaker is asked (crm_mon, cibadmin: ~30 ms) in a thread
    while Ceph is: the two are independent, and start and migrate_to wait for both.

    ``retry_watchless`` (start): a lock holder with no watch on a member, unclean node or
    this node is refused, but a watch re-registers within seconds after an OSD failover or
    a network blip; so such images are inspected again, within the deadline (at most
    WATCHLESS_RETRY_CAP_S), before the decision is made; and so are images refused only
    for watchers with no lock on a live member (the lingering watch of a client that died:
    safety.ImageView.lingering), at most LINGER_RETRY_CAP_S.

    ``early``: a HeadStart whose cluster view and Ceph connection are taken instead of
    being begun here."""
    from vmceph.safety import UNKNOWN_BLOCKLIST, UNKNOWN_REFUSE
    try:
        static = pcmk.parse_node_addresses(p.node_addresses)
        if p.membership:
            pcmk.parse_membership(p.membership)
    except ValueError as e:  # a deep monitor meets them unvalidated
        raise ConfigError(str(e)) from None
    view = early.view if early is not None else bounded.Background(
        lambda: cluster_view(p, deadline, log, on_node), "cluster view")
    ok, detail, imgs, local_ips, session = _gather_ceph(p, deadline, log, dom, images, early)
    try:
        nodes, local, source = view.result(deadline.at_most(15.0))
        known = not source.startswith("unknown")
        owners = {}
        if ok:
            names = set(nodes) | set(static) | {local}
            dns = pcmk.resolve_all(names, deadline.at_most(DNS_CAP_S), _resolver())
            owners = pcmk.owners_map(local, local_ips, nodes, static, dns=dns,
                                     membership_known=known)
            if session is not None:   # a node fenced through Ceph is GONE (cephfence)
                from vmceph.cephfence import ceph_fences
                owners = ceph_fences(session, imgs, owners, p, log)
    except bounded.Timeout:
        if session is not None:
            session.close()
        raise GenericError("Pacemaker did not say who is a member within the action's "
                           "time") from None
    except BaseException:
        if session is not None:
            session.close()
        raise
    policy = UNKNOWN_BLOCKLIST if p.unknown_client_policy == "blocklist" else UNKNOWN_REFUSE
    from vmceph.deadclients import attested
    facts = Facts(quorum_ok=ok, quorum_detail=detail, images=tuple(imgs), owners=owners,
                  local_node=local, domain_active_here=domain_active, unknown_policy=policy,
                  membership_known=known, dead_local=dead_local[0],
                  dead_local_note=dead_local[1], dead_attested=attested(nodes))
    for step in ("gathered", "retried"):
        if step == "retried" and retry_watchless and ok and session is not None:
            facts = _retry_watchless(session, facts, deadline, log)
        if not domain_active:  # this node's krbd mapping of a disk is the domain's own
            from vmceph.disks import without_own_krbd   # path to the image, not a writer
            facts = facts._replace(images=tuple(without_own_krbd(dom, facts.images)))
    return Gathered(facts, nodes, session, local, source)


def _resolver():
    # looked up at call time: tests replace cluster.resolve
    return lambda name, timeout: pcmk.resolve(name, timeout)


def _retry_watchless(session, facts, deadline, log):
    """Inspect again, for a while, the images refused only for lock holders with no watch
    (safety.ImageView.retryable) or only for watchers with no lock on a live member or,
    while the domain does not run here, on this node (safety.ImageView.may_be_lingering);
    the refusal then says how long it waited."""
    from vmceph.safety import classify_image
    t0 = time.monotonic()
    half = deadline.remaining() / 2.0
    cap = WATCHLESS_RETRY_CAP_S
    said, asked = None, False
    while True:
        views = [(i, classify_image(facts, img)) for i, img in enumerate(facts.images)]
        waiting = [i for i, v in views if v.retryable]
        lingering = [i for i, v in views
                     if v.may_be_lingering(facts.domain_active_here)]
        if lingering:
            cap = max(cap, LINGER_RETRY_CAP_S)
        if not waiting and not lingering:
            return facts
        budget = min(cap, half)
        if time.monotonic() - t0 + 1.0 > budget:
            spent = time.monotonic() - t0
            if log and waiting:
                log.warning("lock holders of %s still have no watch after %.1f s: refusing",
                            ", ".join(facts.images[i].spec for i in waiting), spent)
            if log and lingering:
                log.warning("the watchers of %s holding no lock are still there after "
                            "%.1f s: refusing", ", ".join(facts.images[i].spec
                                                          for i in lingering), spent)
            return facts._replace(retried_s=spent) if spent >= 0.5 else facts
        if lingering and not asked:
            asked = True
            if _all_answer(session, facts, lingering, budget, log):
                return facts      # alive, every one of them: refused now, not in 35 s
        if log and waiting:
            log.warning("%s: a lock holder with no watch on a node that may be alive; "
                        "looking again (a watch re-registers after an OSD failover)",
                        ", ".join(facts.images[i].spec for i in waiting))
        if log and lingering and lingering != said:
            said = lingering     # once, not every second for 30 s
            log.warning("%s: open by a client (of a live member, or of this node while the "
                        "domain does not run here) that holds no lock; looking again (the "
                        "watch of a client that died lapses within 30 s)",
                        ", ".join(facts.images[i].spec for i in lingering))
        waiting += lingering
        time.sleep(1.0)
        imgs = list(facts.images)
        for i in waiting:
            imgs[i] = session.inspect(imgs[i].spec)
        facts = facts._replace(images=tuple(imgs))


# How long the lingering watchers get to acknowledge a notification (a live librbd client
# answers within milliseconds; the lab's loaded two cores took up to ~100 ms).
NOTIFY_TIMEOUT_S = 3.0


def _all_answer(session, facts, indexes, budget, log):
    """True if the watchers of every image in ``indexes`` acknowledge a notification:
    then each is a live client (a dead one's watch answers nothing), and there is nothing
    to wait for. Asked once, at the first look."""
    for i in indexes:
        spec = facts.images[i].spec
        answer = session.watchers_answer(spec, min(NOTIFY_TIMEOUT_S, max(0.5, budget)))
        if answer is not True:
            if log:
                log.info("the watchers of %s %s", spec, "did not all acknowledge a "
                         "notification" if answer is False else "could not be notified")
            return False
    if log:
        log.warning("the watchers of %s holding no lock acknowledged a notification: live "
                    "clients; refusing without waiting", ", ".join(
                        facts.images[i].spec for i in indexes))
    return True


def _connect(p, deadline, log):
    """(open CephSession, None), or (None, why) when Ceph cannot be reached in time; refused
    credentials and an unusable configuration raise (they are the resource's problem)."""
    session = CephSession(p.ceph_conf, p.ceph_user, p.ceph_keyring, deadline, log)
    try:
        session.connect()
    except CephUnavailable as e:
        return None, str(e)
    except CephPermission as e:
        raise PermError(str(e)) from None
    except CephConfigError as e:
        raise InstalledError(str(e)) from None
    return session, None


def _gather_ceph(p, deadline, log, dom, images, early=None):
    """(quorum ok, detail, ImageFacts list, this client's addresses, open session or None)."""
    t0 = time.monotonic() if early is None else early.t0

    def spent(text):
        return "%s (%.1f s spent)" % (text, time.monotonic() - t0)
    session, why = _connect(p, deadline, log) if early is None else \
        early.connection(deadline)
    if session is None:
        return False, spent(why), [], [], None
    try:
        ok, detail, _, _ = session.quorum()
        if not ok:
            return False, spent(detail), [], [], session
        imgs = session.inspect_all([d.spec for d in dom.guarded_disks]) if images else []
        imgs = _retry_inspections(session, imgs, deadline, log)
        return True, detail, imgs, session.client_addrs(), session
    except CephUnavailable as e:
        session.close()
        return False, spent(e), [], [], None
    except CephPermission as e:
        session.close()
        raise PermError(str(e)) from None
    except BaseException:
        session.close()
        raise


def quorum_only(p, deadline, log):
    """(ok, detail) of the monitor quorum alone, for the depth-10 monitor: the same session
    and the same answers as gather_with, without the cluster view and the images."""
    t0 = time.monotonic()
    session, why = _connect(p, deadline, log)
    if session is None:
        return False, "%s (%.1f s spent)" % (why, time.monotonic() - t0)
    try:
        ok, detail, _, _ = session.quorum()
    finally:
        session.close()
    if not ok:
        return False, "%s (%.1f s spent)" % (detail, time.monotonic() - t0)
    return True, detail


# Below this much time left in the action, a failed inspection is not retried.
INSPECT_RETRY_MIN_S = 3.0


def _retry_inspections(session, imgs, deadline, log):
    """Inspect again, until the deadline, the images whose inspection failed for a reason
    that passes (a timeout, an OSD error; not a missing image or a denied permission).

    After a node dies with its OSD, a PG whose primary was that OSD serves nothing until the
    monitors have marked the OSD down, which needs their new quorum (~15 s with the default
    mon lease): opening an image whose header lives there times out meanwhile. Seen in the
    three-node lab: a start gave up after one 15 s attempt just before the PG came back,
    and Pacemaker banned the VM from the node for it (start-failure-is-fatal).
    """
    while any(i.error and i.exists and not i.permission_denied for i in imgs):
        if deadline.remaining() < INSPECT_RETRY_MIN_S:
            return imgs
        if log:
            log.warning("cannot inspect %s yet; retrying within the deadline", ", ".join(
                "%s (%s)" % (i.spec, i.error) for i in imgs if i.error))
        time.sleep(0.5)
        imgs = [session.inspect(i.spec) if i.error and i.exists and not i.permission_denied
                else i for i in imgs]
    return imgs


def recover(ctx, session, recoveries):
    """Carry out the verdict's recoveries (fencing.Fencer: blocklist, wait until the OSDs
    use the map carrying the entries, break the locks), with the adapter's errors turned
    into the agent's."""
    from vmceph.fencing import Fencer
    fencer = Fencer(session, ctx.deadline, ctx.log, ctx.params.blocklist_expire)
    try:
        fencer.recover(recoveries)
    except ValueError as e:
        raise GenericError(str(e)) from None
    except CephPermission as e:
        raise PermError("cannot recover: %s (the Ceph user needs mon 'profile rbd' to add "
                        "blocklist entries)" % e) from None
    except CephUnavailable as e:
        raise GenericError("cannot recover the images of a dead client: %s" % e) from None
