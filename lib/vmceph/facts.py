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
                        "member and nothing is recovered", e)
        nodes, source = {}, "unknown (%s)" % e
    return nodes, on_node or view.local_name(), source


def gather(ctx, dom, domain_active, images=True):
    return gather_with(ctx.params, ctx.deadline, ctx.log, dom, domain_active, images,
                       on_node=ctx.node_name, retry_watchless=ctx.action == "start")


# DNS lookups of every node name together, at most this long (they run in parallel).
DNS_CAP_S = 2.0
# How long a start looks again at lock holders with no watch on a node that may be alive.
WATCHLESS_RETRY_CAP_S = 20.0


def gather_with(p, deadline, log, dom, domain_active, images=True, on_node=None,
                retry_watchless=False):
    """Facts for the decision. Pacemaker is asked (crm_mon, cibadmin: ~30 ms) in a thread
    while Ceph is: the two are independent, and start and migrate_to wait for both.

    ``retry_watchless`` (start): a lock holder with no watch on a member, unclean node or
    this node is refused, but a watch re-registers within seconds after an OSD failover or
    a network blip; so such images are inspected again, within the deadline (at most
    WATCHLESS_RETRY_CAP_S), before the decision is made."""
    from vmceph.safety import UNKNOWN_BLOCKLIST, UNKNOWN_REFUSE
    try:
        static = pcmk.parse_node_addresses(p.node_addresses)
        if p.membership:
            pcmk.parse_membership(p.membership)
    except ValueError as e:  # a deep monitor meets them unvalidated
        raise ConfigError(str(e)) from None
    view = bounded.Background(lambda: cluster_view(p, deadline, log, on_node), "cluster view")
    ok, detail, imgs, local_ips, session = _gather_ceph(p, deadline, log, dom, images)
    try:
        nodes, local, source = view.result(deadline.at_most(15.0))
        known = not source.startswith("unknown")
        owners = {}
        if ok:
            names = set(nodes) | set(static) | {local}
            dns = pcmk.resolve_all(names, deadline.at_most(DNS_CAP_S), _resolver())
            owners = pcmk.owners_map(local, local_ips, nodes, static, dns=dns,
                                     membership_known=known)
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
    facts = Facts(quorum_ok=ok, quorum_detail=detail, images=tuple(imgs), owners=owners,
                  local_node=local, domain_active_here=domain_active, unknown_policy=policy,
                  membership_known=known)
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
    (safety.ImageView.retryable); the refusal then says how long it waited."""
    from vmceph.safety import classify_image
    t0 = time.monotonic()
    budget = min(WATCHLESS_RETRY_CAP_S, deadline.remaining() / 2.0)
    while True:
        waiting = [i for i, img in enumerate(facts.images)
                   if classify_image(facts, img).retryable]
        if not waiting:
            return facts
        if time.monotonic() - t0 + 1.0 > budget:
            if log:
                log.warning("lock holders of %s still have no watch after %.1f s: refusing",
                            ", ".join(facts.images[i].spec for i in waiting),
                            time.monotonic() - t0)
            return facts
        if log:
            log.warning("%s: a lock holder with no watch on a node that may be alive; "
                        "looking again (a watch re-registers after an OSD failover)",
                        ", ".join(facts.images[i].spec for i in waiting))
        time.sleep(1.0)
        imgs = list(facts.images)
        for i in waiting:
            imgs[i] = session.inspect(imgs[i].spec)
        facts = facts._replace(images=tuple(imgs))


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


def _gather_ceph(p, deadline, log, dom, images):
    """(quorum ok, detail, ImageFacts list, this client's addresses, open session or None)."""
    t0 = time.monotonic()

    def spent(text):
        return "%s (%.1f s spent)" % (text, time.monotonic() - t0)
    session, why = _connect(p, deadline, log)
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
    """Blocklist every client of the verdict (with expiry), wait until the OSDs use the OSD
    map carrying the entries, then break the locks they hold.

    Blocklisting first: a client that is only cut off, not dead, must not write again once
    its lock is gone (CEPH-FACTS.md: the holder's later I/O fails with ConnectionShutdown).
    Then the wait librbd's own lock break does (blocklist -> wait_for_latest_osdmap ->
    break), which vmceph must do itself since it blocklists on its own: an OSD still on the
    previous map accepts the old client's writes. With our session on the newest map, the
    lock break and the new QEMU's first operations carry that epoch, and an OSD handles an
    operation only once it has the map of the operation's epoch.
    Each address is blocklisted once, however many images it holds, and all addresses at
    once: every blocklist change is a monitor (Paxos) round of ~1 s, and the monitors fold
    changes that arrive together into one round (lab: 2 entries one after the other 2.0 s,
    3 at once 1.0 s; a QEMU has one client, so one address, per disk). Each lock is broken
    once per (image, address, cookie): one address may hold another cookie elsewhere. The
    lock breaks themselves take ~10-100 ms.
    """
    from vmceph.safety import instance_addr
    expire = ctx.params.blocklist_expire
    bad = sorted({r.addr for r in recoveries if not instance_addr(r.addr)})
    if bad:  # the classifier refuses these; never emit ip:0/0 whatever the caller says
        raise GenericError("refusing to blocklist %s: not the address of one client "
                           "instance (ip:port/nonce, nonce > 0)" % ", ".join(bad))
    try:
        first = {}
        for r in recoveries:
            first.setdefault(r.addr, r)
        _blocklist_all(ctx, session, list(first.values()), expire)
        if first:
            _wait_for_osdmap(ctx, session)
        done = set()
        for r in recoveries:
            key = (r.image, r.addr, r.cookie)
            if not r.cookie or key in done:
                continue
            done.add(key)
            t0 = time.monotonic()
            broken = _break_lock(ctx, session, r)
            ctx.log.warning("%s exclusive lock of %s held by %s at %s (node %s) in %.2f s",
                            "broke the" if broken else "no longer found the", r.image,
                            r.entity, r.addr, r.node or "unknown", time.monotonic() - t0)
    except CephPermission as e:
        raise PermError("cannot recover: %s (the Ceph user needs mon 'profile rbd' to add "
                        "blocklist entries)" % e) from None
    except CephUnavailable as e:
        raise GenericError("cannot recover the images of a dead client: %s" % e) from None


def _wait_for_osdmap(ctx, session):
    """Wait (bounded) until this session has the newest OSD map, the one carrying the
    blocklist entries just added; log how long it took."""
    t0 = time.monotonic()
    session.wait_for_latest_osdmap()
    ctx.log.warning("waited %.2f s for the OSD map carrying the blocklist entries before "
                    "breaking any lock", time.monotonic() - t0)


def _blocklist_all(ctx, session, recoveries, expire):
    """_blocklist_add for every recovery's address, concurrently; the first error raises
    once all have finished."""
    import concurrent.futures

    def one(r):
        t0 = time.monotonic()
        _blocklist_add(ctx, session, r.addr, expire)
        ctx.log.warning("blocklisted %s for %d s in %.2f s: %s", r.addr, expire,
                        time.monotonic() - t0, r.describe())
    if len(recoveries) == 1:
        one(recoveries[0])
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(recoveries))) as pool:
        futures = [pool.submit(one, r) for r in recoveries]
    for f in futures:
        f.result()


# Below this much time left in the action, a failed blocklist change is not retried.
BLOCKLIST_RETRY_MIN_S = 3.0


def _blocklist_add(ctx, session, addr, expire):
    """Add one blocklist entry, retrying until the action's deadline while the monitors
    cannot commit it.

    Right after a node dies with its monitor, the survivors keep answering reads from their
    lease (quorum_status still lists the dead monitor), so the start decision is made, but a
    blocklist change is a Paxos write: it waits for the new quorum (~15 s with the default
    mon lease of 5 s) and one attempt times out after rados_mon_op_timeout (10 s). Seen in
    the three-node lab: a start after a node crash failed that way, and Pacemaker then
    banned the VM from this node (start-failure-is-fatal) for a condition that healed
    seconds later. The entry is idempotent, so a retry is safe.
    """
    attempt = 1
    while True:
        try:
            session.blocklist_add(addr, expire)
            return
        except CephUnavailable as e:
            if ctx.deadline.remaining() < BLOCKLIST_RETRY_MIN_S:
                raise
            ctx.log.warning("blocklisting %s not confirmed yet (attempt %d: %s); retrying "
                            "while the monitors form a quorum", addr, attempt, e)
            attempt += 1
            time.sleep(0.5)


def _break_lock(ctx, session, r):
    """Break one exclusive lock, retrying until the action's deadline while its image
    cannot be opened.

    Breaking needs a read-write open of the image, which reads its header object. When the
    OSD serving that object was cut off (a partitioned node) rather than killed, the OSD
    stays "up" in the osdmap until its peers' heartbeat grace (20 s) runs out and every
    open waits for it; one attempt times out after rados_osd_op_timeout (15 s). Seen in the
    three-node lab: the start failed, and the half-done read-write open left a watch of
    this node on the image for 30 s, which made the next node refuse the start as a second
    writer. The holder is blocklisted already, so a retry is safe.
    """
    attempt = 1
    while True:
        try:
            return session.break_lock(r.image, Locker(r.entity, r.cookie, r.addr))
        except CephUnavailable as e:
            if ctx.deadline.remaining() < BLOCKLIST_RETRY_MIN_S:
                raise
            ctx.log.warning("breaking the lock of %s not possible yet (attempt %d: %s); "
                            "retrying", r.image, attempt, e)
            attempt += 1
            time.sleep(0.5)
