"""The Pacemaker adapter: membership, node attributes, and who owns a Ceph client address.

Everything comes from Pacemaker's own command-line tools with ``--output-as=xml`` (never
scraped text): ``crm_mon -1 -A --output-as=xml`` gives every node's state and node
attributes in one call (~30 ms), ``attrd_updater`` publishes and removes this node's
attributes, ``crm_resource -z`` sets utilization.

A node is, for the start decision (safety.py):
- MEMBER  online and not unclean: it may be running a QEMU right now;
- UNCLEAN lost, fencing pending or failed: it may still be writing; never act on its clients;
- GONE    offline and clean: fenced (or shut down cleanly, which stopped its resources);
- LOCAL   this node.
Outside a cluster (``crm_mon`` fails) membership is unknown and every other node is taken
as a live MEMBER, the safe assumption, unless the ``membership`` parameter says otherwise.
"""

import socket
import xml.etree.ElementTree as ET

from vmceph import bounded
from vmceph.safety import GONE, LOCAL, MEMBER, UNCLEAN, UNKNOWN, Owner, ip_of

ADDR_ATTRIBUTE = "vmceph-ceph-addrs"
HEALTH_ATTRIBUTE = "#health-ceph"


class ClusterError(Exception):
    pass


class NodeInfo:
    __slots__ = ("name", "state", "attributes")

    def __init__(self, name, state, attributes=None):
        self.name = name
        self.state = state
        self.attributes = attributes or {}

    def __repr__(self):
        return "NodeInfo(%r, %r)" % (self.name, self.state)


def parse_crm_mon(xml_text):
    """{node name: NodeInfo} from ``crm_mon -1 -A --output-as=xml``.

    <nodes><node name="node1" online="true" unclean="false" .../></nodes>
    <node_attributes><node name="node1"><attribute name="#health-ceph" value="green"/>...
    """
    root = ET.fromstring(xml_text)
    nodes = {}
    for n in root.iterfind("nodes/node"):
        online = n.get("online") == "true"
        unclean = n.get("unclean") == "true"
        if n.get("type") not in (None, "member"):
            continue  # remote and guest nodes run no Ceph client of ours
        state = MEMBER if online and not unclean else (UNCLEAN if unclean else GONE)
        nodes[n.get("name")] = NodeInfo(n.get("name"), state)
    for n in root.iterfind("node_attributes/node"):
        info = nodes.get(n.get("name"))
        if info is not None:
            info.attributes = {a.get("name"): a.get("value") for a in n.iterfind("attribute")}
    return nodes


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


def parse_membership(text):
    """The ``membership`` parameter: 'node1=member node2=gone node3=unclean'."""
    states = {"member": MEMBER, "online": MEMBER, "gone": GONE, "fenced": GONE,
              "offline": GONE, "unclean": UNCLEAN}
    nodes = {}
    for item in text.split():
        name, sep, state = item.partition("=")
        if not sep or not name or state.lower() not in states:
            raise ValueError("membership entry %r is not NODE=member|fenced|unclean" % item)
        nodes[name] = NodeInfo(name, states[state.lower()])
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

    def _cmd(self, argv, cap=10.0):
        return self.run(argv, timeout=self.deadline.at_most(cap), log=self.log)

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
        return nodes

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

    def delete_permanent_attribute(self, name):
        self._check(self._cmd(["crm_attribute", "-n", name, "-D", "-l", "forever"]),
                    "delete permanent node attribute %s" % name)

    def delete_attribute(self, name):
        self._check(self._cmd(["attrd_updater", "-n", name, "-D"]),
                    "delete node attribute %s" % name)

    def query_attribute(self, name, node=None):
        argv = ["attrd_updater", "-n", name, "-Q"] + (["-N", node] if node else [])
        r = self._cmd(argv)
        if r.rc != 0:
            return None
        # 'name="#health-ceph" host="node1" value="green"'
        for field in r.out.split():
            if field.startswith('value="'):
                return field[len('value="'):].rstrip('"')
        return None

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


def owners_map(local_node, local_ips, nodes, static_addrs, attr_name=ADDR_ATTRIBUTE,
               resolver=None):
    """IP -> Owner from every source, in order of trust:
    1. this node's own Ceph client addresses (as the cluster sees our session) -> LOCAL;
    2. the ``node_addresses`` parameter;
    3. the addresses each node publishes through CephHealth (node attribute);
    4. name resolution of the node names (``resolver(name) -> [ip]``).
    A later source never overrides an earlier one. ``nodes`` = {name: NodeInfo} (may be {}:
    membership unknown, every other node counts as a live member)."""
    owners = {}

    def state_of(node):
        if node == local_node:
            return LOCAL
        info = nodes.get(node)
        if info is None:
            return MEMBER if not nodes else GONE  # not in the cluster's node list: not a member
        return info.state

    def add(ip, node, source):
        ip = ip_of(ip) if ("/" in ip or ip.count(":") == 1) else ip
        if ip and ip not in owners:
            owners[ip] = Owner(node, state_of(node), source)

    for ip in local_ips:
        add(ip, local_node, "own session")
    for node, ips in static_addrs.items():
        for ip in ips:
            add(ip, node, "node_addresses")
    for node, info in nodes.items():
        for ip in (info.attributes.get(attr_name) or "").split():
            add(ip, node, "attribute " + attr_name)
    if resolver is not None:
        names = set(nodes) | set(static_addrs) | {local_node}
        for node in sorted(names):
            for ip in resolver(node):
                if not ip.startswith("127."):
                    add(ip, node, "name resolution")
    return owners


__all__ = ["Cluster", "ClusterError", "NodeInfo", "owners_map", "parse_crm_mon",
           "parse_membership", "parse_node_addresses", "resolve", "ADDR_ATTRIBUTE",
           "HEALTH_ATTRIBUTE", "UNKNOWN"]
