"""The Pacemaker adapter: membership, node attributes, and who owns a Ceph client address.

Everything comes from Pacemaker's own command-line tools with ``--output-as=xml`` (never
scraped text): ``crm_mon -1 -A --output-as=xml`` gives every node's state and node
attributes in one call (~30 ms), ``attrd_updater`` publishes and removes this node's
attributes, ``crm_resource -z`` sets utilization.

A node is, for the decisions (safety.py):
- MEMBER       online and not unclean: it may be running a QEMU right now (a node whose
               Pacemaker stopped while corosync runs shows online="true" pending="true":
               still a member);
- UNCLEAN      lost, fencing pending or failed: it may still be writing;
- MAINTENANCE  offline while in maintenance (node attribute or cluster maintenance-mode):
               its unmanaged VMs may still run;
- GONE         fenced: offline and clean, the newest fencing action against it succeeded
               (``stonith_admin --history '*' --verbose``), and nothing ran on it since (no
               resource operation in the CIB status with a time at or after the fencing:
               Pacemaker erases a fenced node's operation history, so any operation there is
               from a later join);
- LEFT         offline and clean, not fenced since its last activity (a clean shutdown);
- LOCAL        this node.
Remote and guest nodes keep their own online/unclean state: they run clients too. Seen
with a pacemaker_remote node (lab `vmlab up --remotes 1`, captures remote1-*): crm_mon
lists it among <nodes> with type="remote" and the same online/unclean attributes; the
fencing history names it as target; its <node_state remote_node="true"> loses its <lrm>
at the fence like a full member's, and its permanent attributes (the addresses CephHealth
publishes) stay in the CIB's <nodes> as <node type="remote">. So one rule serves both,
and an unclean remote node is GONE only on the same proof. A crash was caught once with
crm_mon still saying unclean="true" while the history already showed the fence: it stays
UNCLEAN (refused) until crm_mon agrees. A guest node is "fenced" by recovering its
container resource, without the fencer (not verified in the lab): no history entry
names it, so it is at most LEFT, never GONE, and a client there with a watch is refused.
Outside a cluster (``crm_mon`` fails) membership is unknown: every other node counts as a
live MEMBER and nothing is recovered (safety.Facts.membership_known), unless the
``membership`` parameter (tests only) says otherwise.

Seen in the three-node lab (Pacemaker 2.1.5; captures in tests/unit/data/pacemaker/):
after a fence the node's <node_state> has crm-debug-origin="send_stonith_update" and no
<lrm>; after the same node rejoined and left cleanly, its <lrm> lists operations with
last-rc-change after the fence's completed time, and the fencing history is unchanged.
"""

import os
import socket
import xml.etree.ElementTree as ET

from vmceph import bounded
from vmceph.safety import (CONFLICT, DNS_SOURCE, GONE, LEFT, LOCAL, MAINTENANCE, MEMBER,
                           UNCLEAN, UNKNOWN, Owner, ip_of)

ADDR_ATTRIBUTE = "vmceph-ceph-addrs"
HEALTH_ATTRIBUTE = "#health-ceph"


class ClusterError(Exception):
    pass


class NodeInfo:
    __slots__ = ("name", "state", "attributes", "note", "kind")

    def __init__(self, name, state, attributes=None, note="", kind="member"):
        self.name = name
        self.state = state
        self.attributes = attributes or {}
        self.note = note
        # crm_mon's type: "member" (corosync), "remote" (pacemaker_remote), "guest"
        self.kind = kind

    def __repr__(self):
        return "NodeInfo(%r, %r)" % (self.name, self.state)


def parse_crm_mon(xml_text):
    """{node name: NodeInfo} from ``crm_mon -1 -A --output-as=xml``.

    <nodes><node name="node1" online="true" unclean="false" maintenance="false" .../></nodes>
    <node_attributes><node name="node1"><attribute name="#health-ceph" value="green"/>...
    An offline clean node is LEFT here; Cluster.nodes() makes it GONE on proof of fencing.
    """
    root = ET.fromstring(xml_text)
    opts = root.find("summary/cluster_options")
    cluster_maintenance = opts is not None and opts.get("maintenance-mode") == "true"
    nodes = {}
    for n in root.iterfind("nodes/node"):
        online = n.get("online") == "true"
        unclean = n.get("unclean") == "true"
        maintenance = n.get("maintenance") == "true" or cluster_maintenance
        if unclean:
            state = UNCLEAN
        elif online:
            state = MEMBER
        elif maintenance:
            state = MAINTENANCE
        else:
            state = LEFT
        nodes[n.get("name")] = NodeInfo(n.get("name"), state, kind=n.get("type") or "member")
    for n in root.iterfind("node_attributes/node"):
        info = nodes.get(n.get("name"))
        if info is not None:
            info.attributes = {a.get("name"): a.get("value") for a in n.iterfind("attribute")}
    return nodes


def _epoch(text):
    """Pacemaker's timestamps as epoch seconds: '2026-12-01 15:41:31Z' (fencing history),
    or an epoch number (CIB operations); None if unreadable."""
    from datetime import datetime, timezone
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    t = text.strip().replace("Z", "+00:00")
    try:
        stamp = datetime.fromisoformat(t)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def parse_fence_history(xml_text):
    """{target: (status, completed epoch or None)} of the newest fencing action against
    each target, from ``stonith_admin --history '*' --verbose --output-as=xml``:
    <fence_event action="reboot" target="node3" status="success" completed="2026-12-01
    15:41:31Z" .../>. A pending action (no completed time) is the newest."""
    out = {}
    for e in ET.fromstring(xml_text).iter("fence_event"):
        target, status = e.get("target"), e.get("status") or ""
        when = _epoch(e.get("completed"))
        if status == "pending" or when is None:
            out[target] = ("pending", None)
            continue
        prev = out.get(target)
        if prev is None or (prev[1] is not None and when >= prev[1]):
            out[target] = (status, when)
    return out


def parse_cib_activity(xml_text):
    """{node: newest resource operation time (epoch)} from ``cibadmin -Q -o status``
    (<node_state uname=...><lrm>...<lrm_rsc_op last-rc-change="1796139704" .../>)."""
    out = {}
    for ns in ET.fromstring(xml_text).iter("node_state"):
        times = []
        for op in ns.iter("lrm_rsc_op"):
            for key in ("last-rc-change", "last-run"):
                t = _epoch(op.get(key))
                if t is not None:
                    times.append(t)
        if times:
            out[ns.get("uname")] = max(times)
    return out


def confirm_fenced(nodes, history, activity):
    """Make GONE every LEFT node whose newest fencing action succeeded with no operation of
    it recorded at or after that fencing (1 s resolution: equal counts as after)."""
    for name, info in nodes.items():
        if info.state != LEFT:
            continue
        status, when = history.get(name, (None, None))
        if status != "success" or when is None:
            continue
        last = activity.get(name)
        if last is not None and last >= when:
            info.note = "fenced, but active again since (it rejoined and left)"
            continue
        info.state = GONE
        info.note = "%sfenced at %s" % (_KIND_NOTE.get(info.kind, ""), _stamp(when))
    return nodes


_KIND_NOTE = {"remote": "pacemaker_remote node, ", "guest": "guest node, "}


class _AlwaysActive(dict):
    def get(self, key, default=None):
        return float("inf")


def _stamp(epoch):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def parse_cib_nodes(xml_text):
    """{uname: {name: value}} from ``cibadmin -Q -o nodes``:
    <nodes><node id="1" uname="node1"><instance_attributes id="nodes-1">
      <nvpair id="nodes-1-vmceph-ceph-addrs" name="vmceph-ceph-addrs" value="10.0.0.1"/>"""
    root = ET.fromstring(xml_text)
    out = {}
    for n in root.iter("node"):
        attrs = {}
        for nv in n.iterfind("instance_attributes/nvpair"):
            attrs[nv.get("name")] = nv.get("value")
        if n.get("uname"):
            out[n.get("uname")] = attrs
    return out


MEMBERSHIP_STATES = {"member": MEMBER, "online": MEMBER, "gone": GONE, "fenced": GONE,
                     "left": LEFT, "offline": LEFT, "unclean": UNCLEAN,
                     "maintenance": MAINTENANCE}


def parse_attrd_query(xml_text, name, node=None):
    """The value in ``attrd_updater -n NAME -Q [-N NODE] --output-as=xml`` (Pacemaker
    2.1.5, seen in the lab)::

        <pacemaker-result api-version="2.25" request="...">
          <attribute name="vmceph-ceph-addrs" value="10.0.0.1 10.0.1.1" host="node1"/>
          <status code="0" message="OK"/>
        </pacemaker-result>

    None when no <attribute> of that name (and host) is there, or its value is empty (a
    deleted attribute stays in attrd as value="" until purged; an unknown attribute is an
    error, rc 78). ElementTree on expat 2.5 (Debian 12): no external entities, and expat
    >= 2.4.1 bounds entity expansion; the text comes from the local Pacemaker tool."""
    root = ET.fromstring(xml_text)
    for a in root.iter("attribute"):
        if a.get("name") != name or (node and a.get("host") not in (None, node)):
            continue
        return a.get("value") or None
    return None


def parse_attrd_query_all(xml_text, name):
    """{host: value} from ``attrd_updater -n NAME -Q -A --output-as=xml``: one <attribute>
    per node that has it (the same XML as parse_attrd_query). Empty values (deleted, not
    yet purged) are left out."""
    root = ET.fromstring(xml_text)
    return {a.get("host"): a.get("value") for a in root.iter("attribute")
            if a.get("name") == name and a.get("host") and a.get("value")}


def parse_membership(text):
    """The ``membership`` parameter (tests, outside a cluster): 'node1=member node2=fenced
    node3=unclean'; also left|offline (clean leave, not fenced) and maintenance."""
    nodes = {}
    for item in text.split():
        name, sep, state = item.partition("=")
        if not sep or not name or state.lower() not in MEMBERSHIP_STATES:
            raise ValueError("membership entry %r is not NODE=member|fenced|unclean|left|"
                             "maintenance" % item)
        st = MEMBERSHIP_STATES[state.lower()]
        nodes[name] = NodeInfo(name, st, note="membership parameter: %s" % state.lower())
    return nodes


def parse_node_addresses(text):
    """The ``node_addresses`` parameter: 'node1=10.0.0.1,10.0.1.1 node2=10.0.0.2'."""
    out = {}
    for item in text.split():
        name, sep, addrs = item.partition("=")
        ips = [a.strip() for a in addrs.split(",") if a.strip()]
        if not sep or not name or not ips:
            raise ValueError("node_addresses entry %r is not NODE=IP[,IP...]" % item)
        out[name] = ips
    return out


class Cluster:
    """Read-only view of the cluster for one action, plus attribute updates."""

    def __init__(self, deadline, log=None, runner=bounded.command):
        self.deadline = deadline
        self.log = log
        self.run = runner

    def _cmd(self, argv, cap=10.0, env=None):
        if env is None:
            return self.run(argv, timeout=self.deadline.at_most(cap), log=self.log)
        return self.run(argv, timeout=self.deadline.at_most(cap), env=env, log=self.log)

    def nodes(self):
        """{name: NodeInfo}, or raise ClusterError when Pacemaker cannot be asked."""
        try:
            r = self._cmd(["crm_mon", "-1", "-A", "--output-as=xml"])
        except FileNotFoundError:
            raise ClusterError("crm_mon is not installed") from None
        except bounded.Timeout as e:
            raise ClusterError(str(e)) from None
        if r.rc != 0:
            raise ClusterError("crm_mon failed (rc %d): %s" % (r.rc, (r.err or r.out).strip()[:200]))
        try:
            nodes = parse_crm_mon(r.out)
        except ET.ParseError as e:
            raise ClusterError("crm_mon answered no XML: %s" % e) from None
        # Permanent node attributes (the addresses CephHealth publishes) are read from the
        # CIB itself: crm_mon shows none for an offline node, and a fenced node is offline
        # exactly when its addresses matter.
        for name, attrs in self.permanent_attributes().items():
            info = nodes.get(name)
            if info is not None:
                info.attributes = dict(attrs, **info.attributes)
                if info.state == LEFT and (attrs.get("maintenance") or "").lower() in (
                        "true", "on", "yes", "1"):
                    info.state = MAINTENANCE
        if any(i.state == LEFT for i in nodes.values()):
            confirm_fenced(nodes, self.fence_history(), self.activity())
        return nodes

    def fence_history(self):
        """parse_fence_history of the whole cluster; {} (nothing proven fenced) if it
        cannot be read. --verbose: without it Pacemaker 2.1.5 lists one successful event
        per target, not necessarily the newest (seen in the lab)."""
        try:
            r = self._cmd(["stonith_admin", "--history", "*", "--verbose", "--output-as=xml"])
            if r.rc != 0:
                raise ClusterError((r.err or r.out).strip()[:200])
            return parse_fence_history(r.out)
        except (FileNotFoundError, bounded.Timeout, ClusterError, ET.ParseError) as e:
            if self.log is not None:
                self.log.warning("cannot read the fencing history (no node counts as fenced): "
                                 "%s", e)
            return {}

    def activity(self):
        """parse_cib_activity of the CIB status; None for a node means no operation. If the
        status cannot be read, every node counts as active now (nothing proven fenced)."""
        try:
            r = self._cmd(["cibadmin", "-Q", "-o", "status"])
            if r.rc != 0:
                raise ClusterError((r.err or r.out).strip()[:200])
            return parse_cib_activity(r.out)
        except (FileNotFoundError, bounded.Timeout, ClusterError, ET.ParseError) as e:
            if self.log is not None:
                self.log.warning("cannot read the CIB status (no node counts as fenced): %s", e)
            return _AlwaysActive()

    def permanent_attributes(self):
        """{node: {name: value}} of the CIB's <nodes> section; {} if it cannot be read."""
        try:
            r = self._cmd(["cibadmin", "-Q", "-o", "nodes"])
            if r.rc != 0:
                raise ClusterError((r.err or r.out).strip()[:200])
            return parse_cib_nodes(r.out)
        except (FileNotFoundError, bounded.Timeout, ClusterError, ET.ParseError) as e:
            if self.log is not None:
                self.log.warning("cannot read permanent node attributes: %s", e)
            return {}

    def local_name(self):
        try:
            r = self._cmd(["crm_node", "-n"], cap=5.0)
            if r.rc == 0 and r.out.strip():
                return r.out.strip()
        except (FileNotFoundError, bounded.Timeout):
            pass
        return socket.gethostname().split(".")[0]

    def set_attribute(self, name, value, dampen=None):
        # With a dampening, -B (--update-both: value and delay), not -U: Pacemaker 2.1.5's
        # attrd ignores -d with -U and writes every change at once ("Setting ... with no
        # write delay" in its log; measured on the three-node lab), so a one-sample blip of
        # #health-ceph moved VMs.
        if dampen:
            argv = ["attrd_updater", "-n", name, "-B", value, "-d", dampen]
        else:
            argv = ["attrd_updater", "-n", name, "-U", value]
        self._check(self._cmd(argv), "set node attribute %s" % name)

    def set_permanent_attribute(self, name, value):
        """A node attribute of this node kept in the CIB's <nodes> section: it survives the
        node's fencing (transient attributes are cleared then)."""
        self._check(self._cmd(["crm_attribute", "-n", name, "-v", value, "-l", "forever"]),
                    "set permanent node attribute %s" % name)

    def query_permanent_attribute(self, name):
        """This node's permanent attribute ``name`` as the CIB has it, None if absent
        (crm_attribute -G -q: the bare value; rc 6 or 105 when there is none)."""
        r = self._cmd(["crm_attribute", "-n", name, "-G", "-q", "-l", "forever"])
        if r.rc in (6, 105):
            return None
        self._check(r, "read permanent node attribute %s" % name)
        return r.out.strip()

    def delete_permanent_attribute(self, name):
        self._check(self._cmd(["crm_attribute", "-n", name, "-D", "-l", "forever"]),
                    "delete permanent node attribute %s" % name)

    def delete_attribute(self, name):
        self._check(self._cmd(["attrd_updater", "-n", name, "-D"]),
                    "delete node attribute %s" % name)

    def query_attribute(self, name, node=None):
        """Value of the transient attribute ``name`` of ``node`` (this node by default) as
        attrd holds it; None if it is unset or attrd cannot be asked. Read as XML: the
        text form (name="..." host="..." value="...") cannot carry a value with spaces or
        quotes (an address list read as its first address)."""
        argv = ["attrd_updater", "-n", name, "-Q", "--output-as=xml"] + (
            ["-N", node] if node else [])
        r = self._cmd(argv)
        if r.rc != 0:
            return None
        try:
            return parse_attrd_query(r.out, name, node)
        except ET.ParseError:
            return None

    def query_attribute_all(self, name):
        """{node: value} of the transient attribute ``name`` on every node, as attrd holds
        it; {} when no node has it. Raises ClusterError when attrd cannot be asked (an
        unknown attribute is not that: attrd_updater 2.1.5 answers rc 105 or 78 then).

        Without OCF_RESKEY_CRM_meta_on_node: Pacemaker's execd sets it for every agent
        action, and attrd_updater 2.1.5 then answers -A with that one node's value only
        (lab, 2026-12-02: the storage-cut test's peers never saw the cut node's outage
        token, so it stayed yellow; the same command by hand listed all three nodes)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("OCF_RESKEY_CRM_meta_on_node", "OCF_RESKEY_CRM_meta_on_node_uuid")}
        r = self._cmd(["attrd_updater", "-n", name, "-Q", "-A", "--output-as=xml"], env=env)
        try:
            values = parse_attrd_query_all(r.out, name) if r.out.strip() else {}
        except ET.ParseError as e:
            raise ClusterError("cannot read node attribute %s: %s" % (name, e)) from None
        if r.rc not in (0, 78, 105) and not values:
            raise ClusterError("cannot read node attribute %s: %s"
                               % (name, (r.err or r.out).strip()[:200]))
        return values

    def set_utilization(self, resource, name, value):
        self._check(self._cmd(["crm_resource", "-r", resource, "-z", "-p", name, "-v",
                               str(value)]), "set utilization %s of %s" % (name, resource))

    def delete_utilization(self, resource, name):
        r = self._cmd(["crm_resource", "-r", resource, "-z", "-d", name])
        if r.rc not in (0, 105):  # 105 = no such attribute: nothing to remove
            self._check(r, "remove utilization %s of %s" % (name, resource))

    @staticmethod
    def _check(r, what):
        if r.rc != 0:
            raise ClusterError("cannot %s: %s" % (what, (r.err or r.out).strip()[:200]))


def resolve(name, timeout):
    """IPv4/IPv6 addresses of a host name, bounded (a DNS lookup may hang)."""
    def work():
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
        return sorted({i[4][0] for i in infos})
    try:
        return bounded.call(work, timeout, "resolve " + name)
    except (OSError, bounded.Timeout):
        return []


def resolve_all(names, timeout, resolver=None):
    """{name: [ip]} of every name, looked up in parallel under one cap: a lookup that has
    not answered within ``timeout`` counts as no address (each used to take up to 2 s one
    after the other). ``resolver(name, timeout)`` defaults to resolve()."""
    import time
    resolver = resolver or resolve
    names = sorted(set(names))
    jobs = {n: bounded.Background(lambda n=n: resolver(n, timeout), "resolve " + n)
            for n in names}
    end = time.monotonic() + timeout
    out = {}
    for n, job in jobs.items():
        try:
            out[n] = list(job.result(max(0.0, end - time.monotonic())) or [])
        except (bounded.Timeout, OSError):
            out[n] = []
    return out


def unknown_node_names(static_addrs, nodes):
    """Sentences for validate-all: the names of ``node_addresses`` that the cluster does not
    know (``nodes`` = {name: NodeInfo}; empty = membership unknown, nothing to say). Their
    addresses count as UNKNOWN: a typo or an FQDN ('node2.example.com' for 'node2') must
    not make a live node's QEMU look like nobody's, nor look dead."""
    if not nodes:
        return []
    return ["node_addresses names %s, which is not a node of this cluster (nodes: %s): its "
            "addresses count as unknown; use the names crm_mon shows"
            % (name, ", ".join(sorted(nodes))) for name in sorted(static_addrs)
            if name not in nodes]


def owners_map(local_node, local_ips, nodes, static_addrs, attr_name=ADDR_ATTRIBUTE,
               resolver=None, dns=None, membership_known=None):
    """IP -> Owner from every source:
    1. this node's own Ceph client addresses (as the cluster sees our session) -> LOCAL;
    2. the ``node_addresses`` parameter;
    3. the addresses each node publishes through CephHealth (node attribute);
    4. name resolution of the node names (``dns`` = {name: [ip]}, or ``resolver(name)``):
       its owners are marked (safety.DNS_SOURCE) and never justify a recovery.
    Two sources giving one address to two different nodes make it CONFLICT (refused). A
    name the cluster does not know (``nodes`` lists every node, remote ones included) is
    UNKNOWN, not "gone": a typo or an FQDN must never make a live node's client look
    dead. ``nodes`` = {} means membership unknown: every other node counts as a member."""
    owners = {}
    if membership_known is None:
        membership_known = bool(nodes)

    def owner_of(node, source):
        if node == local_node:
            return Owner(node, LOCAL, source)
        info = nodes.get(node)
        if info is None:
            if not membership_known:
                return Owner(node, MEMBER, source, "membership unknown")
            return Owner(node, UNKNOWN, source,
                         "%s names it, but the cluster has no node %s" % (source, node))
        return Owner(node, info.state, source, getattr(info, "note", ""))

    def add(ip, node, source):
        ip = ip_of(ip) if ("/" in ip or ip.count(":") == 1) else ip
        if not ip:
            return
        prev = owners.get(ip)
        if prev is None:
            owners[ip] = owner_of(node, source)
        elif prev.node != node and prev.state != CONFLICT:
            owners[ip] = Owner(prev.node, CONFLICT, prev.source,
                               "address %s is given to node %s by %s and to node %s by %s"
                               % (ip, prev.node, prev.source, node, source))

    for ip in local_ips:
        add(ip, local_node, "own session")
    for node, ips in static_addrs.items():
        for ip in ips:
            add(ip, node, "node_addresses")
    for node, info in nodes.items():
        for ip in (info.attributes.get(attr_name) or "").split():
            add(ip, node, "attribute " + attr_name)
    names = set(nodes) | set(static_addrs) | {local_node}
    if dns is None and resolver is not None:
        dns = {n: resolver(n) for n in sorted(names)}
    for node in sorted(dns or {}):
        for ip in dns[node]:
            if not ip.startswith("127.") and ip != "::1":
                add(ip, node, DNS_SOURCE)
    return owners


__all__ = ["Cluster", "ClusterError", "NodeInfo", "owners_map", "parse_crm_mon",
           "parse_fence_history", "parse_cib_activity", "confirm_fenced", "resolve_all",
           "unknown_node_names",
           "parse_membership", "parse_node_addresses", "resolve", "ADDR_ATTRIBUTE",
           "HEALTH_ATTRIBUTE", "UNKNOWN"]
