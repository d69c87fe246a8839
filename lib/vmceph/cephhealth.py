"""ocf:vmceph:CephHealth: tells Pacemaker, per node, whether this node can use Ceph.

Run as a clone. Its monitor checks, from this node and within its deadline, monitor quorum
(explicitly: an already connected client's ``health`` stays HEALTH_OK after quorum is lost),
the health status and checks, and optionally that the configured pools have every PG active
(I/O to an inactive PG hangs; a cluster-wide condition, so yellow, never red). The verdict goes into a node-health attribute (``#health-ceph``
by default) as green / yellow / red, with attrd dampening, so that Pacemaker's
``node-health-strategy`` keeps VMs off nodes that cannot reach their disks. A node that
cannot reach a monitor quorum is red once a peer, asked through node attributes, has
reached one since: the problem is this node's. While no peer has, the quorum is lost for
everybody and every node is yellow, not red: red everywhere would make migrate-on-red stop
every VM, whose I/O goes on without a monitor quorum. It also
publishes the addresses this node's Ceph clients use (``vmceph-ceph-addrs``), which
RBDVirtualDomain uses to tell which node holds or watches an image.

The monitor fails only for the agent's own problems (misconfiguration, attrd unreachable),
never because Ceph is unhealthy: that is what the attribute says.
"""

import os
import re

from vmceph import ocf, quorumwitness
from vmceph.ocf import (OCF_NOT_RUNNING, OCF_SUCCESS, Action, AgentSpec, ConfigError,
                        GenericError, InstalledError, Param, absolute_path, attribute_name,
                        ceph_id, regular_file)

GREEN, YELLOW, RED = "green", "yellow", "red"
COLORS = (GREEN, YELLOW, RED)
_RANK = {GREEN: 0, YELLOW: 1, RED: 2}


def parse_check_colors(text):
    """'OSD_DOWN=yellow PG_AVAILABILITY=red' -> dict; ValueError on a bad entry."""
    out = {}
    for item in text.split():
        code, sep, color = item.partition("=")
        if not sep or not code or color not in COLORS:
            raise ValueError("entry %r is not CHECK=green|yellow|red" % item)
        out[code] = color
    return out


def color_for(reachable, quorum_ok, status, checks, inactive_pgs, warn_color=YELLOW,
              check_colors=None, err_color=YELLOW):
    """(color, reason). Pure: unit tests cover it.

    - Ceph unreachable or no monitor quorum: red (nothing can be started or recovered).
      The agent then asks its peers whether that is this node's problem or everybody's
      (quorumwitness: yellow while no peer has reached a quorum since).
    - PGs not active in a configured pool: yellow at least (see below).
    - HEALTH_OK: green. Otherwise each raised check counts with the color ``check_colors``
      gives it, else by severity: HEALTH_WARN -> ``warn_color``, HEALTH_ERR -> ``err_color``;
      the node's color is the worst of them.

    HEALTH_ERR is yellow by default, not red: health is cluster-wide, every node sees the
    same, and red on every node stops every VM (crm_simulate with migrate-on-red: all nodes
    red = all VMs stopped). Red is for what makes *this node* unable to do I/O.

    Inactive PGs are cluster-wide too (issue 13): a PG's state is the cluster's, the same
    seen from every node, and I/O to it hangs from any of them. Red would be red on every
    node at once: migrate-on-red stops every VM, whose stop itself may hang on that I/O and
    end in fencing, and no node could start them anyway. What an administrator needs is to
    know, and the guests left where they are to resume when the PGs peer: yellow, with the
    pools and PGs in the reason (logged as a warning). Who really wants red can still say
    PG_AVAILABILITY=red in check_colors.
    """
    if not reachable:
        return RED, "Ceph unreachable from this node"
    if not quorum_ok:
        return RED, "no monitor quorum"
    check_colors = check_colors or {}
    if status == "HEALTH_OK" and not checks and not inactive_pgs:
        return GREEN, "HEALTH_OK"
    worst, why = GREEN, []
    for code, c in sorted((checks or {}).items()):
        sev = c.get("severity") if isinstance(c, dict) else c
        color = check_colors.get(code) or (err_color if sev == "HEALTH_ERR" else warn_color)
        why.append("%s=%s" % (code, color))
        if _RANK[color] > _RANK[worst]:
            worst = color
    if not checks:
        # an answer without a known status is not a healthy one
        worst = err_color if status == "HEALTH_ERR" else (GREEN if status == "HEALTH_OK"
                                                          else warn_color)
    reason = "%s (%s)" % (status, ", ".join(why) or "no checks")
    if inactive_pgs:
        if _RANK[worst] < _RANK[YELLOW]:
            worst = YELLOW
        reason = ("PGs not active: %s%s (cluster-wide: the same from every node, so "
                  "yellow, not red); %s" % (", ".join(inactive_pgs[:5]),
                                            ", ..." if len(inactive_pgs) > 5 else "", reason))
    return worst, reason


PG_LINE = re.compile(r"^pg (\d+)\.([0-9a-f]+) ")


def inactive_pgs_of(checks, pool_ids, pools):
    """(["pool:pgid", ...], unknown or None): the PGs of ``pools`` that the monitors'
    PG_AVAILABILITY check names (``health detail``: one 'pg 2.1 is stuck inactive for
    62s, current state unknown, last acting []' line per PG). Pure.

    ``unknown`` says why the answer may be incomplete: a pool that does not exist, or a
    detail list shorter than the check's count (the monitors list at most
    mon_health_max_detail PGs) in which none of ``pools`` appears."""
    ids = {}
    unknown = []
    for pool in pools:
        if pool in pool_ids:
            ids[str(pool_ids[pool])] = pool
        else:
            unknown.append("pool %s does not exist" % pool)
    check = (checks or {}).get("PG_AVAILABILITY")
    found, listed = [], 0
    if check:
        for line in check.get("detail") or []:
            m = PG_LINE.match(line)
            if not m:
                continue
            listed += 1
            if m.group(1) in ids:
                found.append("%s:%s.%s" % (ids[m.group(1)], m.group(1), m.group(2)))
        count = check.get("count")
        if not found and ids and isinstance(count, int) and count > listed:
            unknown.append("%d PGs are not active and the monitors list %d of them, none of "
                           "pool %s" % (count, listed, ", ".join(sorted(ids.values()))))
    return found, "; ".join(unknown) or None


def _dampen_ok(v):
    if any(c.isspace() for c in v):
        raise ValueError("a duration contains no white space (e.g. 5s)")
    if ocf.parse_duration(v) > 3600:
        raise ValueError("at most an hour")


HEALTH_PREFIX = "#health-"


def _health_attribute(v):
    # Pacemaker's node-health-strategy only acts on attributes named #health-*: any other
    # name would be published and never acted on (issue 16: it passed validation)
    if not v.startswith(HEALTH_PREFIX) or len(v) == len(HEALTH_PREFIX):
        raise ValueError("must start with %s (node-health-strategy only reads those), e.g. "
                         "#health-ceph" % HEALTH_PREFIX)
    attribute_name(v)


def _address_attribute(v):
    if v:
        attribute_name(v)
        if v.startswith("#"):
            raise ValueError("names starting with '#' are Pacemaker's own")


PARAMS = [
    Param("ceph_conf", default="/etc/ceph/ceph.conf", check=absolute_path, local=regular_file,
          shortdesc="Ceph configuration file",
          longdesc="Ceph configuration used to reach the cluster."),
    Param("ceph_user", default="", check=ceph_id,
          shortdesc="Ceph client id",
          longdesc="Ceph client id, without 'client.' (e.g. vmceph). Empty: librados' "
                   "default (admin). mon 'profile rbd' caps are enough, also for the PG "
                   "check of 'pools' (it reads the monitors' health detail)."),
    Param("ceph_keyring", default="", check=absolute_path, local=regular_file,
          shortdesc="Ceph keyring",
          longdesc="Keyring of ceph_user. Empty: the keyring setting of ceph_conf."),
    # unique: a new name restarts the clone, and the stop (run with the old parameters)
    # removes the old attribute; a reload would leave it behind, red perhaps, for good
    Param("attribute", default="#health-ceph", unique=True, check=_health_attribute,
          shortdesc="Node health attribute",
          longdesc="Name of the node attribute that gets green, yellow or red. Pacemaker's "
                   "node-health-strategy acts on every attribute whose name starts with "
                   "#health-."),
    Param("address_attribute", default="vmceph-ceph-addrs", check=_address_attribute,
          shortdesc="Node attribute for this node's Ceph client addresses",
          longdesc="Node attribute that gets the addresses (space-separated) this node's Ceph "
                   "clients are seen at; RBDVirtualDomain maps lock holders and watchers to "
                   "nodes with it. It is a permanent attribute (crm_attribute -l forever), "
                   "written when it changes, so that it outlives the node's fencing, when it "
                   "is needed most. Empty: not published."),
    Param("pools", default="", multiline=True,
          shortdesc="Pools whose PGs must all be active",
          longdesc="Space-separated pools; the node is at least yellow while the monitors' "
                   "PG_AVAILABILITY health check names PGs of them as not active (I/O to "
                   "them hangs), and the reason, logged as a warning, lists the pools and "
                   "PGs. Never red: a PG's state is the cluster's, the same from every node, "
                   "and red on every node at once would make migrate-on-red stop every VM; "
                   "red stays for what stops this node's I/O. A pool that does not exist is "
                   "yellow too. Empty: no PG check."),
    Param("warn_color", default=YELLOW, choices=COLORS,
          shortdesc="Color of HEALTH_WARN",
          longdesc="Color of a health check of severity HEALTH_WARN not listed in "
                   "check_colors."),
    Param("err_color", default=YELLOW, choices=COLORS,
          shortdesc="Color of HEALTH_ERR",
          longdesc="Color of a health check of severity HEALTH_ERR not listed in "
                   "check_colors. Yellow by default: Ceph's health is cluster-wide, every node "
                   "reports the same, and red on every node would stop every VM; red is kept "
                   "for what stops this node's I/O (no quorum, unreachable, inactive PGs)."),
    Param("check_colors", default="", multiline=True,
          shortdesc="Colors of chosen health checks",
          longdesc="Per health check code: 'OSD_DOWN=yellow MON_DOWN=green'. Checks not "
                   "listed count by severity (HEALTH_ERR = err_color, HEALTH_WARN = "
                   "warn_color). Every node sees the same checks: a check made red turns "
                   "every node red at once (with migrate-on-red, every VM stops)."),
    Param("dampen", default="5s", check=_dampen_ok,
          shortdesc="Dampening of attribute changes",
          longdesc="attrd waits this long after a change before writing it, so a short blip "
                   "does not move VMs (attrd_updater --delay)."),
    Param("ceph_timeout", type="integer", default=10, minimum=1, maximum=3600,
          shortdesc="Seconds a Ceph check may take",
          longdesc="Longest time the monitor waits for Ceph (connect, quorum, health, PGs), "
                   "within the monitor's own timeout. No answer in time: red once a peer "
                   "reaches the monitors, yellow while none does."),
]

ACTIONS = [
    Action("start", "30s"),
    Action("stop", "30s"),
    Action("monitor", "30s", interval="10s", depth=0),
    Action("reload", "30s"),
    Action("meta-data", "5s"),
    Action("validate-all", "10s"),
]

SPEC = AgentSpec(
    name="CephHealth",
    shortdesc="Publishes whether this node can use Ceph, as a node-health attribute",
    longdesc=__doc__.split("\n\n", 1)[1].strip().replace("``", "'") + """

Run it as a clone with meta allow-unhealthy-nodes=true, so that it keeps running on a red \
node and can turn it green again, and set node-health-strategy (migrate-on-red, \
only-green, progressive or custom) so VMs are placed only where Ceph is usable.""",
    params=PARAMS,
    actions=ACTIONS,
)


class CephHealth:
    spec = SPEC

    def validate(self, ctx):
        """Every parameter strictly (types in PARAMS); values wrong everywhere -> 6, what
        this node lacks -> 5. The librados parse of ceph_conf is skipped for stop and the
        probe, which never read it."""
        p = ctx.params
        missing = None
        # validate-all at OCF_CHECK_LEVEL 0: the values only (ocf.Context.checks_environment)
        local = ctx.action != "validate-all" or ctx.checks_environment
        try:
            p.validate(local=local)
        except InstalledError as e:
            missing = e
        try:
            parse_check_colors(p.check_colors)
        except ValueError as e:
            raise ConfigError("parameter check_colors: %s" % e) from None
        if not local:
            return
        if missing is not None:
            raise missing
        try:
            import rados  # noqa: F401
        except ImportError:
            raise InstalledError("Python module rados is missing (install python3-rados)")
        if ctx.action == "stop" or ctx.is_probe:
            return
        from vmceph.inputs import ceph_conf_problem
        problem = ceph_conf_problem(p.ceph_conf)
        if problem:
            cls = InstalledError if problem[0] == "missing" else ConfigError
            raise cls("parameter ceph_conf=%s: %s" % (ocf.shown(p.ceph_conf), problem[1]))

    def degraded(self, ctx, error):
        if ctx.action == "stop":
            self._unpublish(ctx)
            _mark(ctx, False)
            return OCF_SUCCESS
        return OCF_SUCCESS if _marked(ctx) else OCF_NOT_RUNNING

    def start(self, ctx):
        _mark(ctx, True)
        self._check_and_publish(ctx)
        return OCF_SUCCESS

    def stop(self, ctx):
        self._unpublish(ctx)
        _mark(ctx, False)
        return OCF_SUCCESS

    def reload(self, ctx):
        """New parameters (all but ``attribute``, see PARAMS) without a stop: if this
        instance runs, check Ceph and publish at once with the new values (dampen, colors,
        ceph_user, address_attribute), as the next monitor would; the node attribute is
        not removed in between, so no VM moves because of the change."""
        if not _marked(ctx):
            return OCF_SUCCESS
        self._check_and_publish(ctx)
        return OCF_SUCCESS

    def monitor(self, ctx):
        if not _marked(ctx):
            return OCF_NOT_RUNNING
        if ctx.is_probe:
            return OCF_SUCCESS
        self._check_and_publish(ctx)
        return OCF_SUCCESS

    # -------------------------------------------------------------------------
    def evaluate(self, ctx):
        """(color, reason, client addresses or None, fenced through Ceph, reached a monitor
        quorum). Not reached is red here; _check_and_publish asks the peers (quorumwitness)
        whether it stays red."""
        from vmceph.ceph import CephError, CephPermission, CephSession, CephConfigError
        from vmceph.ocf import Deadline
        p = ctx.params
        budget = Deadline(min(float(p.ceph_timeout), ctx.deadline.remaining()), margin_s=0)
        session = CephSession(p.ceph_conf, p.ceph_user, p.ceph_keyring, budget, ctx.log)
        try:
            session.connect()
        except CephPermission as e:
            raise GenericError("CephHealth cannot log in to Ceph: %s" % e) from None
        except CephConfigError as e:
            raise InstalledError(str(e)) from None
        except CephError as e:
            return RED, str(e), None, False, False
        try:
            addrs = session.client_addrs()
            ok, detail, _, _ = session.quorum()
            if not ok:
                return RED, detail, addrs, False, False
            # fenced through Ceph (fence_vmceph) and not unfenced: quorum and health look
            # fine from here, but no I/O of this node's clients can succeed (cephfence)
            from vmceph.cephfence import fenced_here
            fenced = fenced_here(session, addrs, ctx.log)
            if fenced:
                return RED, fenced, addrs, True, True
            h = session.health()
            inactive, unknown = [], None
            pools = p.pools.split()
            if pools:
                # The monitors' own PG_AVAILABILITY check (health detail), not the manager's
                # 'pg ls-by-pool': no mgr caps needed, and one answer for every pool.
                try:
                    ids = session.pool_ids()
                except CephPermission as e:
                    # the agent's own misconfiguration, not Ceph's state: fail the action
                    raise GenericError("CephHealth may not list the pools (needed by pools=): "
                                       "%s (give it mon 'profile rbd')" % e) from None
                except CephError as e:
                    ids, unknown = {}, "PG state of %s unknown: %s" % (", ".join(pools), e)
                if unknown is None:
                    inactive, unknown = inactive_pgs_of(h["checks"], ids, pools)
            color, why = color_for(True, True, h["status"], h["checks"], inactive,
                                   p.warn_color, parse_check_colors(p.check_colors),
                                   p.err_color)
            if unknown and color == GREEN:
                # What cannot be told is the same for every node: red here would be red
                # everywhere, and migrate-on-red then stops every VM (seen in the lab:
                # crashing the mgr's node stopped the VMs on both survivors when the PG
                # check asked the manager). Unknown is yellow, like an unknown health status.
                color, why = YELLOW, unknown
            elif unknown:
                why += "; " + unknown
            return color, why, addrs, False, True
        except CephError as e:
            # after quorum_status answered: quorum lost meanwhile, or the health/PG call
            # ran out of time; not reached, as far as the peers are concerned
            return RED, str(e), None, False, False
        finally:
            session.close()

    def _check_and_publish(self, ctx):
        from vmceph.cluster import Cluster, ClusterError
        from vmceph import bounded
        cl = Cluster(ctx.deadline, ctx.log)
        p = ctx.params
        witness = _Witness(ctx, cl)
        color, why, addrs, fenced, reached = self.evaluate(ctx)
        color, why = witness.judge(reached, color, why)
        (ctx.log.info if color == GREEN else ctx.log.warning)(
            "Ceph seen from this node: %s (%s)", color, why)
        try:
            cl.set_attribute(p.attribute, color, p.dampen)
        except (ClusterError, bounded.Timeout, FileNotFoundError) as e:
            raise GenericError("cannot publish node attribute %s: %s" % (p.attribute, e)) from None
        if fenced:
            self._ask_unfencing(ctx, cl)
        if p.address_attribute and addrs:
            self._publish_addresses(ctx, cl, " ".join(addrs))

    def _ask_unfencing(self, ctx, cl):
        """This node is fenced through Ceph and its cluster stack runs: ask Pacemaker to
        unfence it, by setting its #node-unfenced to 0.

        Seen in the lab (tests/e2e/test_fence_vmceph_e2e.py, corosync-only cut): the node,
        fenced alive by fence_vmceph, rejoined with its own Pacemaker still running; its
        attrd still held the #node-unfenced time of its earlier unfencing, so Pacemaker saw
        nothing to unfence, and the node stayed a member whose clients could do no I/O
        until an administrator ran stonith_admin --unfence. Pacemaker's scheduler (2.1,
        pcmk__node_unfenced) treats a missing or "0" #node-unfenced as a node never
        unfenced: with a device that provides unfencing it stops the node's resources
        first (its stale domains), then runs each device's 'on' (fence_vmceph keeps every
        client instance still alive on the node blocklisted one by one), then lets it run
        resources again; the controller sets the attribute anew. Without such a device the
        attribute means nothing. While the node is cut off, the request waits in its own
        attrd and takes effect when it rejoins. A failure is only logged."""
        from vmceph.cluster import ClusterError
        from vmceph import bounded
        name = "#node-unfenced"
        try:
            if cl.query_attribute(name) == "0":
                return
            cl.set_attribute(name, "0")
        except (ClusterError, bounded.Timeout, FileNotFoundError) as e:
            ctx.log.warning("this node is fenced through Ceph; cannot ask Pacemaker to "
                            "unfence it (%s=0): %s", name, e)
            return
        ctx.log.warning("this node is fenced through Ceph: asked Pacemaker to unfence it "
                        "(%s=0): it stops this node's resources, then runs the fence "
                        "devices' 'on'", name)

    def _publish_addresses(self, ctx, cl, value):
        """The addresses go into a *permanent* node attribute: RBDVirtualDomain needs them
        after this node is fenced (to recover its images), and fencing clears transient
        attributes. Written only when the CIB's value differs (a CIB write each time
        otherwise): compared with the CIB itself, not a local cache, which a node whose
        CIB entry was removed meanwhile (crm_attribute -D, a node re-added) would trust
        and never publish again."""
        from vmceph.cluster import ClusterError
        from vmceph import bounded
        name = ctx.params.address_attribute
        try:
            if cl.query_permanent_attribute(name) == value:
                return
        except (ClusterError, bounded.Timeout, FileNotFoundError) as e:
            ctx.log.debug("cannot read node attribute %s from the CIB (%s): writing it", name, e)
        try:
            cl.set_permanent_attribute(name, value)
        except (ClusterError, bounded.Timeout, FileNotFoundError) as e:
            raise GenericError("cannot publish node attribute %s: %s" % (name, e)) from None
        ctx.log.info("published %s=%s", name, value)

    def _unpublish(self, ctx):
        """Remove the health attribute. The permanent address attribute stays (issue 10):
        removing it at stop left the node unmapped exactly when it may be fenced next (a
        health-clone restart, a node leaving), and then its QEMUs' addresses are unknown
        and its images cannot be recovered. The addresses are this node's, whatever runs."""
        from vmceph.cluster import Cluster, ClusterError
        from vmceph import bounded
        cl = Cluster(ctx.deadline, ctx.log)
        health = ctx.params.raw("attribute") or "#health-ceph"
        for name in quorumwitness.names(health):
            try:   # this node's outage token and acknowledgements: nobody else's business
                cl.delete_attribute(name)
            except (ClusterError, bounded.Timeout, FileNotFoundError) as e:
                ctx.log.debug("could not remove node attribute %s: %s", name, e)
        try:
            cl.delete_attribute(health)
        except (ClusterError, bounded.Timeout, FileNotFoundError) as e:
            ctx.log.warning("could not remove node attribute %s: %s", health, e)
        try:  # the local cache of earlier versions
            os.unlink(_state_path(ctx, "addrs"))
        except FileNotFoundError:
            pass


class _Witness:
    """quorumwitness.step for one monitor. Both attributes are read before Ceph is asked:
    an acknowledgement must only carry tokens read before its writer reached a quorum, and
    only an acknowledgement that existed before this node asked may make it red. One read
    after would let a peer that reached the returning quorum while this node's ask was
    still timing out vouch for an outage that had just ended for everybody: seen in the
    15-fault soak (seed 1204, fault 8), a node red for 11 s as a quorum came back, hidden
    only by attrd's dampening. In steady state (no token anywhere) only ``lost`` is read.

    attrd trouble is never a reason to say red: without the peers' word a node without
    quorum is yellow, and the health attribute's own write (next) fails the monitor if
    attrd is really gone."""

    def __init__(self, ctx, cl):
        from vmceph.cluster import ClusterError
        from vmceph import bounded
        self.ctx, self.cl = ctx, cl
        self.errors = (ClusterError, bounded.Timeout, FileNotFoundError)
        self.lost_name, self.seen_name = quorumwitness.names(ctx.params.attribute)
        # Pacemaker's name for this node, as execd passes it (no crm_node call then)
        self.me = ctx.node_name or cl.local_name()
        self.lost = self._read(self.lost_name)
        # no token anywhere: nothing to acknowledge, and no voucher can name the token a
        # first failure is about to create
        self.seen = self._read(self.seen_name) if self.lost else {}

    def _read(self, name):
        try:
            return self.cl.query_attribute_all(name)
        except self.errors as e:
            self.ctx.log.debug("cannot read %s: %s", name, e)
            return {}

    def judge(self, reached, color, why):
        vouchers, writes = quorumwitness.step(self.me, reached, self.lost, self.seen)
        for which, value in writes:
            name = self.lost_name if which == "lost" else self.seen_name
            try:
                if value is None:
                    self.cl.delete_attribute(name)
                else:
                    self.cl.set_attribute(name, value)
            except self.errors as e:
                self.ctx.log.warning("cannot publish node attribute %s: %s", name, e)
        if vouchers is None:
            return color, why
        if vouchers:
            return RED, ("%s; %s reached a monitor quorum after this node lost it: this "
                         "node's own problem" % (why, ", ".join(vouchers)))
        return YELLOW, ("%s; no peer has reached a monitor quorum since this node lost it "
                        "(cluster-wide, or not known yet): yellow, not red, so that "
                        "migrate-on-red does not stop VMs whose I/O goes on without one"
                        % why)


def _state_path(ctx, kind):
    """In the first state directory that is usable (ocf.state_dirs: HA_RSCTMP naming a
    file made every action fail, issue 16); long instance names hashed."""
    return os.path.join(ocf.usable_state_dir(ctx.env),
                        ocf.state_file_name("vmceph-CephHealth-", ctx.instance, "." + kind))


def _mark_path(ctx):
    return _state_path(ctx, "started")


def _mark_name(ctx):
    return ocf.state_file_name("vmceph-CephHealth-", ctx.instance, ".started")


def _mark(ctx, on):
    if not on:
        ocf.remove_state(ctx, _mark_name(ctx))  # every state directory; never raises
    elif ocf.write_state(ctx, _mark_name(ctx), "") is None:
        raise GenericError("CephHealth cannot record that it runs: no usable state "
                           "directory (HA_RSCTMP=%s, %s)"
                           % (ocf.shown(ctx.env.get("HA_RSCTMP", "")), ocf.STATE_DIR_FALLBACK))


def _marked(ctx):
    return ocf.state_exists(ctx, _mark_name(ctx))


def main():
    import sys
    sys.exit(ocf.run(CephHealth()))
