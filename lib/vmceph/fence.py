"""Fencing a node through Ceph: cut every Ceph client of the node off the OSDs.

What is fenced, and why this way (measured on the lab, Ceph 16.2.15, hyperconverged nodes
whose mon, OSD and QEMUs share one address):

- ``off`` adds one *host-wide* blocklist entry ``IP:0/0`` per address of the node. The
  OSDs test a client's address against the entry itself and against the same address with
  port 0 and nonce 0, so this entry refuses every client instance on that IP: QEMU's librbd,
  krbd, any librados program, the ones the monitors know, the ones cut off from every
  monitor (a partitioned node's clients have no monitor session to enumerate), and the
  ones started while fencing runs. Per-instance entries alone cannot be complete.
- The node's own daemons are not harmed by it: the OSDs check the blocklist on client
  operations only, not on replication or heartbeats between OSDs, and the monitors do not
  check it at all. With ``IP:0/0`` on node 3 for 35 s, osd.2 (on that IP) stayed up and
  in, the 17 PGs stayed active+clean, the three mons stayed in quorum, HEALTH_OK; with it
  on node 1 (mon, OSD and the mgr) the mgr stayed available too. A librados writer on the
  fenced IP failed with ESHUTDOWN (errno 108) from 0.7 s after the command was sent.
- ``osd blocklist range add IP/32`` exists in 16.2.15 (added and removed in the lab, its
  effect on daemons not measured), but a ``profile rbd`` user may not add it (EACCES)
  while it may add ``IP:0/0``; ``IP:0/0`` also works on every Ceph release. So no range.
- Success is reported only once this client holds the OSD map carrying the entries
  (``wait_for_latest_osdmap``, as librbd's own lock break does): every later operation of a
  new writer carries that epoch, and an OSD handles no operation before it has the map the
  operation names, so no OSD can accept the fenced node's write after a new writer's.
  ``mark_osds_down`` additionally marks the node's OSDs down in the same step: placement
  groups then re-peer at once instead of after the heartbeat grace (20 s), and a new
  interval begins, so nothing the fenced node's OSD sent in the old one is applied.
- Entries are added in parallel: the monitors batch changes that arrive within one
  proposal interval (``paxos_propose_interval``, 1 s) into one OSD map epoch, and one
  entry alone took 0.78-1.0 s.

Unfencing (``on``) and what makes it safe:

- Removing an entry gives a still-living client its access back: a librados writer that
  failed with ESHUTDOWN while ``IP:0/0`` was listed wrote again 0.3 s after the entry was
  removed (lab). So ``on`` never simply removes the host-wide entry. It first lists every
  client instance connected from the node's addresses on every monitor of the quorum
  (``sessions``; the node's daemons and the manager's own clients are not client
  instances and are left alone), blocklists each of them individually (``ip:port/nonce``;
  an entry of a dead instance is harmless, a new process is a new nonce), waits for that
  map, and only then removes the host-wide entries it added itself.
- What it cannot see: a stale instance alive on the node but connected to no monitor at
  that moment. Pacemaker unfences a node when it rejoins, and a node that learns it was
  fenced stops its own cluster stack, so a rejoin normally means the node was rebooted or
  its cluster stack restarted by hand: docs/fencing.md says to reboot it first.
- "Its own": ``off`` records the entries it added in the monitors' config-key store
  (``vmceph/fence/<node>``), written in the same parallel batch; ``on`` removes only
  recorded entries and refuses a host-wide entry it has no record of (someone else's).
  Without a record the node stays fenced, the safe direction.

Every Ceph call is bounded (ceph.CephSession); no quorum means failure within the
action's budget, so Pacemaker moves on to the next fencing level.
"""

import json
import time

from vmceph import bounded
from vmceph.ceph import CephError, CephPermission, CephUnavailable, parse_blocklist
from vmceph.safety import host_entry, ip_of

RECORD_PREFIX = "vmceph/fence/"
# Entries must outlive any stale client: an expired entry gives it its access back.
# Ten years, in seconds (the monitors accept any float).
EXPIRE_S = 315360000.0


class FenceError(Exception):
    """Fencing could not be done or proven; ``str()`` says why and what to do."""


# ----------------------------------------------------------------------- pure helpers


def is_host_entry(addr):
    a = addr.strip()
    for prefix in ("v2:", "v1:", "any:"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    return a.endswith(":0/0")


def fence_state(entries, ips):
    """'off' when every address of the node has its host-wide entry, else 'on'. A partial
    set is 'on': the fence is not complete, so Pacemaker's off must run (again)."""
    have = {e.strip() for e in entries}
    if ips and all(host_entry(ip) in have for ip in ips):
        return "off"
    return "on"


def session_instance(s):
    """'ip:port/nonce' of a monitor session if it is a client instance, else None.

    A ``sessions`` item (mon tell, 16.2.15):
    {"name": "client.?", "entity_name": "mgr.n1", "con_type": "client",
     "addrs": {"addrvec": [{"type": "any", "addr": "10.179.0.1:0", "nonce": 1865354144}]}}
    The manager's own librados clients have con_type "client" but entity mgr.*: daemons,
    left alone, as are the mons (entity "") and OSDs (con_type "osd")."""
    if s.get("con_type") != "client":
        return None
    entity = s.get("entity_name") or ""
    if entity.split(".", 1)[0] != "client":     # mgr.*, osd.*, mds.*, "" (a mon peer)
        return None
    vec = ((s.get("addrs") or {}).get("addrvec") or [])
    for a in vec:
        addr, nonce = a.get("addr") or "", int(a.get("nonce") or 0)
        if nonce > 0 and addr and not addr.startswith("0.0.0.0"):
            return "%s/%d" % (addr, nonce)
    return None


def instances_on(sessions, ips, exclude=()):
    """Client instances of ``sessions`` whose IP is one of ``ips``, minus ``exclude``."""
    ips = set(ips)
    out = set()
    for s in sessions:
        inst = session_instance(s)
        if inst and ip_of(inst) in ips and inst not in exclude:
            out.add(inst)
    return sorted(out)


def osds_on(osd_dump, ips):
    """Ids of the OSDs that are up and listen on one of ``ips`` (``osd dump`` JSON)."""
    ips = set(ips)
    out = []
    for o in (osd_dump or {}).get("osds", []):
        addrs = [a.get("addr", "") for a in (o.get("public_addrs") or {}).get("addrvec", [])]
        addrs.append(o.get("public_addr") or "")
        if o.get("up") and any(a and ip_of(a) in ips for a in addrs):
            out.append(int(o["osd"]))
    return sorted(set(out))


def node_ips(node, static_addrs, attributes, attr_name):
    """Addresses of ``node``: the ``node_addresses`` option first, else the permanent node
    attribute CephHealth publishes (space-separated IPs)."""
    if node in static_addrs:
        return list(static_addrs[node])
    value = (attributes.get(node) or {}).get(attr_name) or ""
    return [ip for ip in value.split() if ip]


# ----------------------------------------------------------------------- the fencer
class _Job:
    """A call in a daemon thread, polled (a Ceph call cannot be interrupted)."""

    def __init__(self, fn):
        import threading
        self._box = {}
        self._t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._t.start()

    def _run(self, fn):
        try:
            self._box["value"] = fn()
        except BaseException as e:
            self._box["error"] = e

    def running(self):
        return self._t.is_alive()

    def value(self):
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("value")


class NodeFencer:
    """off/on/status of one node against one CephSession (connected). Not
    vmceph.fencing.Fencer: that one blocklists the *instances* holding a VM's images and
    breaks their locks when RBDVirtualDomain recovers a VM; this one fences a whole node."""

    CONFIRM_S = 1.0     # target OSDs silent this long after the map are marked down
    POLL_S = 0.02

    def __init__(self, session, log=None, clock=time.monotonic):
        self.s = session
        self.log = log
        self.clock = clock

    def _info(self, msg, *args):
        if self.log is not None:
            self.log.info(msg, *args)

    # ---------------------------------------------------------------- reading
    def entries(self):
        entries, _ranges = parse_blocklist(self.s.mon("osd blocklist ls"))
        return entries

    def status(self, ips):
        """'off' or 'on'. Retried like off: fencing.py asks the status before 'off', and an
        unanswered status would fail the fence while the monitors re-elect."""
        return self._retrying(lambda: fence_state(self.entries(), ips), "status")

    def record(self, node):
        """What ``off`` recorded for ``node``, or None."""
        try:
            out = self.s.mon("config-key get", key=RECORD_PREFIX + node)
        except CephUnavailable as e:
            if "(-2)" in str(e):    # ENOENT: no record
                return None
            raise
        if isinstance(out, dict):
            return out
        try:
            return json.loads(out) if out else None
        except ValueError:
            return None

    def _own(self):
        try:
            return set(self.s.client_addrs())
        except Exception:  # no address known: nothing to protect, nothing excluded
            return set()

    # ---------------------------------------------------------------- writing
    def _parallel(self, calls, what):
        """Run mon commands at once (one OSD map epoch for all); raise the first error."""
        jobs = [bounded.Background(fn, what) for fn in calls]
        errors = []
        for job in jobs:
            try:
                job.result(self.s._left(self.s.MON_OP_CAP) + 1.0)
            except bounded.Timeout as e:
                errors.append(CephUnavailable(str(e)))
            except CephError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def _wait_map(self):
        return self.s.wait_for_latest_osdmap()

    def _retrying(self, fn, what):
        """``fn()`` again while the monitors cannot commit and time is left: after a mon
        dies, even a peon, the survivors answer no write for ~14 s (lease, then election;
        lab: the first 'osd blocklist' timed out after 10 s, a retry then succeeds). Every
        step of off and on is idempotent, so a retry repeats it whole."""
        while True:
            try:
                return fn()
            except CephUnavailable as e:
                left = self.s.deadline.remaining() if self.s.deadline is not None else 0
                if left < 2.0:
                    raise
                self._info("%s: %s; retrying (%.0f s left)", what, e, left)
                time.sleep(0.5)

    def off(self, node, ips, mark_osds_down=False):
        """Fence ``node``: host-wide entries for ``ips``, recorded; returns a summary dict.
        Raises FenceError (nothing proven) or CephError."""
        return self._retrying(lambda: self._off(node, ips, mark_osds_down), "fence " + node)

    def _off(self, node, ips, mark_osds_down):
        if not ips:
            raise FenceError("no Ceph client address known for node %s: set node_addresses "
                             "or let CephHealth publish the node attribute" % node)
        own = self._own()
        mine = sorted(set(ips) & own)
        if mine:
            raise FenceError("refusing to fence %s: address %s is this fencing node's own "
                             "(wrong node_addresses or pcmk_host_map?)" % (node, ", ".join(mine)))
        t0 = self.clock()
        add = [host_entry(ip) for ip in ips]
        rec = json.dumps({"node": node, "ips": list(ips), "host_entries": add,
                          "time": time.time()}, sort_keys=True)
        # librados' own rados_blocklist_add (python3-rados), as the agents do; the expiry
        # (10 years) fits its C int
        calls = [lambda ip=ip: self.s.blocklist_host(ip, int(EXPIRE_S)) for ip in ips]
        calls.append(lambda: self.s.mon("config-key set", key=RECORD_PREFIX + node, val=rec))
        osds = []
        if mark_osds_down:
            osds = osds_on(self.s.mon("osd dump"), ips)
            if osds:
                calls.append(lambda: self.s.mon("osd down", ids=[str(i) for i in osds]))
        self._parallel(calls, "fence %s" % node)
        t_added = self.clock()
        waited = self._wait_map()
        epoch = self.epoch()
        late = self.confirm_osds(epoch, osds_on(self.s.mon("osd dump"), ips), skip=osds)
        # Proof from Ceph itself, on the map we now hold: every entry is listed.
        if self.status(ips) != "off":
            raise FenceError("the monitors accepted the blocklist entries of %s but do not "
                             "list them all: not fenced" % node)
        took = self.clock() - t0
        down = sorted(set(osds) | set(late))
        self._info("fenced %s: %s blocklisted%s in %.2f s (entries %.2f s, OSD map %.2f s, "
                   "every up OSD at epoch >= %d)", node, ", ".join(add),
                   (", OSDs %s marked down" % down) if down else "", took, t_added - t0,
                   waited, epoch)
        return {"entries": add, "osds_down": down, "epoch": epoch, "seconds": took}

    def epoch(self):
        return int((self.s.mon("osd stat") or {}).get("epoch", 0))

    def _osd_map_of(self, osd):
        """Newest OSD map epoch the OSD ``osd`` holds (``ceph tell osd.N status``)."""
        cmd = json.dumps({"prefix": "status", "format": "json"})
        ret, out, err = self.s.cluster.osd_command(osd, cmd, b"")
        if ret in (-13, -1):
            raise CephPermission("Ceph refused 'tell osd.%d status' (%s): the fencing user "
                                 "needs osd 'allow *' to prove the OSDs hold the fence "
                                 "(docs/fencing.md)" % (osd, err or "access denied"))
        if ret != 0:
            return None
        return int(json.loads(out).get("newest_map", 0))

    def confirm_osds(self, epoch, target_osds, skip=()):
        """Wait until every up OSD holds OSD map ``epoch`` (the one carrying the entries).

        Why not only wait_for_latest_osdmap: in the lab a librados writer on the fenced node
        completed a write 88 ms after that had returned (its OSD did not have the map yet).
        OSDs of the target that do not answer within CONFIRM_S (the node crashed, or its
        storage network is cut) are marked down: a down OSD serves no operation, and the
        new interval makes its peers drop what it sent in the old one. Any other OSD that
        does not confirm before the deadline fails the fence (nothing proven).
        Returns the target OSDs it marked down."""
        dump = self.s.mon("osd dump") or {}
        up = {int(o["osd"]) for o in dump.get("osds", []) if o.get("up")} - set(skip)
        t0 = self.clock()
        confirmed, marked, jobs = set(), [], {}
        try:
            return self._confirm_loop(epoch, target_osds, up, t0, confirmed, marked, jobs)
        finally:
            if any(j.running() for j in jobs.values()):
                # a call still runs on the handle: it must not be shut down under it
                self.s.abandoned.append("tell osd status")

    def _confirm_loop(self, epoch, target_osds, up, t0, confirmed, marked, jobs):
        while True:
            pending = up - confirmed - set(marked)
            if not pending:
                return marked
            for o in pending:
                if o not in jobs:
                    jobs[o] = _Job(lambda o=o: self._osd_map_of(o))
            time.sleep(self.POLL_S)
            for o, job in list(jobs.items()):
                if job.running():
                    continue
                del jobs[o]
                try:
                    got = job.value()
                except CephPermission:
                    raise
                except Exception as e:  # an OSD that cannot answer counts as not yet
                    self._info("osd.%d status: %s", o, e)
                    got = None
                if got is not None and got >= epoch:
                    confirmed.add(o)
            if not marked and self.clock() - t0 >= self.CONFIRM_S:
                late = sorted((up - confirmed) & set(target_osds))
                if late:
                    self.s.mon("osd down", ids=[str(i) for i in late])
                    self._wait_map()
                    marked.extend(late)
            if self.s.deadline is not None and self.s.deadline.remaining() < 0.3:
                raise FenceError("OSDs %s did not confirm holding OSD map %d (the one carrying "
                                 "the blocklist) in time: fence not proven"
                                 % (", ".join("osd.%d" % i for i in sorted(pending)), epoch))

    def sessions(self):
        """Sessions of every monitor in quorum; FenceError unless all of them answered
        (a monitor we cannot ask may hold the session of a stale client)."""
        q = self.s.mon("quorum_status")
        names = list(q.get("quorum_names") or [])
        if not names:
            raise FenceError("no monitor quorum")
        out = []
        for name in names:
            ans = self.s.mon_target(name, "sessions")
            if not isinstance(ans, list):
                raise FenceError("mon.%s answered no session list" % name)
            out.extend(ans)
        return out

    def on(self, node, ips):
        """Unfence ``node``: blocklist each client instance now connected from its
        addresses, then remove the host-wide entries ``off`` recorded. Returns a dict."""
        return self._retrying(lambda: self._on(node, ips), "unfence " + node)

    def _on(self, node, ips):
        t0 = self.clock()
        rec = self.record(node)
        present = set(self.entries())
        host = sorted(e for e in present if is_host_entry(e)
                      and ip_of(e) in set(ips) | set((rec or {}).get("ips", [])))
        if not host:
            return {"instances": [], "removed": [], "seconds": self.clock() - t0}
        recorded = set((rec or {}).get("host_entries", []))
        foreign = [e for e in host if e not in recorded]
        if foreign:
            raise FenceError("%s is blocklisted by an entry fence_vmceph did not add (%s): "
                             "remove it by hand (ceph osd blocklist rm) once no stale "
                             "client of the node lives" % (node, ", ".join(foreign)))
        all_ips = sorted({ip_of(e) for e in host})
        stale = instances_on(self.sessions(), all_ips, exclude=self._own_instances())
        if stale:
            self._parallel([lambda a=a: self.s.blocklist_add(a, int(EXPIRE_S)) for a in stale],
                           "blocklist instances of %s" % node)
            self._wait_map()
        self._parallel([lambda e=e: self.s.mon("osd blocklist", blocklistop="rm", addr=e)
                        for e in host], "unfence %s" % node)
        self._wait_map()
        try:
            self.s.mon("config-key rm", key=RECORD_PREFIX + node)
        except CephError as e:  # a stale record only makes a later `on` of nothing a no-op
            self._info("could not remove the record of %s: %s", node, e)
        took = self.clock() - t0
        self._info("unfenced %s: %d client instance(s) kept blocklisted (%s), removed %s in "
                   "%.2f s", node, len(stale), ", ".join(stale) or "none", ", ".join(host), took)
        return {"instances": stale, "removed": host, "seconds": took}

    def _own_instances(self):
        try:
            raw = self.s.cluster.get_addrs()
        except Exception:
            return set()
        text = raw if isinstance(raw, str) else str(raw)
        out = set()
        for part in text.strip("[]").split(","):
            p = part.strip()
            for prefix in ("v2:", "v1:", "any:"):
                if p.startswith(prefix):
                    p = p[len(prefix):]
            if p:
                out.add(p)
        return out


# ----------------------------------------------------------------------- the agent's glue
# fence-agents' fencing.py calls get_power_status(conn, options), set_power_status(conn,
# options) and get_list(conn, options) with the options as "--long-name" keys. These
# functions hold everything but fencing.py itself, so they are tested without it.
DEFAULTS = {"--ceph-conf": "/etc/ceph/ceph.conf", "--ceph-user": "", "--ceph-keyring": "",
            "--node-addresses": "", "--address-attribute": "vmceph-ceph-addrs",
            "--ceph-timeout": "30"}


class Config:
    def __init__(self, options):
        o = dict(DEFAULTS, **{k: v for k, v in options.items() if v is not None})
        self.conf = o["--ceph-conf"]
        self.user = o["--ceph-user"] or None
        self.keyring = o["--ceph-keyring"] or None
        self.attr = o["--address-attribute"]
        self.mark_down = str(o.get("--mark-osds-down", "0")).lower() in ("1", "yes", "on",
                                                                         "true")
        try:
            self.timeout = float(o["--ceph-timeout"])
        except ValueError:
            raise FenceError("ceph_timeout must be a number of seconds, not %r"
                             % o["--ceph-timeout"]) from None
        if not 1 <= self.timeout <= 3600:
            raise FenceError("ceph_timeout must be between 1 and 3600 seconds")
        from vmceph.cluster import parse_node_addresses
        try:
            self.static = parse_node_addresses(o["--node-addresses"])
        except ValueError as e:
            raise FenceError(str(e)) from None
        for node, ips in self.static.items():
            for ip in ips:
                if not _is_ip(ip):
                    raise FenceError("node_addresses: %r of node %s is not an IP address"
                                     % (ip, node))


def _is_ip(text):
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class Agent:
    """The actions of fence_vmceph on one connected NodeFencer. ``attributes()`` returns the
    CIB's permanent node attributes ({node: {name: value}}), read only when a node is not
    in node_addresses."""

    def __init__(self, cfg, fencer, attributes=lambda: {}):
        self.cfg = cfg
        self.fencer = fencer
        self._attributes = attributes
        self._attr_cache = None

    def attributes(self):
        if self._attr_cache is None:
            self._attr_cache = self._attributes() or {}
        return self._attr_cache

    def ips(self, node):
        ips = node_ips(node, self.cfg.static, self.attributes() if node not in self.cfg.static
                       else {}, self.cfg.attr)
        bad = [ip for ip in ips if not _is_ip(ip)]
        if bad:
            raise FenceError("node attribute %s of %s holds %s, not IP addresses"
                             % (self.cfg.attr, node, ", ".join(bad)))
        if not ips:
            raise FenceError("no Ceph client address known for node %s: add it to "
                             "node_addresses (NODE=IP[,IP...]), or run CephHealth on it so "
                             "it publishes the node attribute %s" % (node, self.cfg.attr))
        return ips

    def get_status(self, node):
        return self.fencer.status(self.ips(node))

    def set_status(self, node, action):
        if action == "off":
            return self.fencer.off(node, self.ips(node), mark_osds_down=self.cfg.mark_down)
        if action == "on":
            return self.fencer.on(node, self.ips(node))
        raise FenceError("unsupported action %s" % action)

    def nodes(self):
        """{node: (node, status)} for list/monitor; a monitor also proves quorum."""
        ok, detail, _names, _mons = self.fencer.s.quorum()
        if not ok:
            raise FenceError("Ceph cannot fence now: %s" % detail)
        names = set(self.cfg.static)
        names |= {n for n, a in self.attributes().items() if a.get(self.cfg.attr)}
        entries = self.fencer.entries()
        out = {}
        for n in sorted(names):
            try:
                out[n] = (n, fence_state(entries, self.ips(n)))
            except FenceError:
                continue
        return out
