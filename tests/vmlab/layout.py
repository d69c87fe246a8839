"""Names, addresses and paths of one lab. Pure computation: nothing here touches the machine.

Layout of a lab's state directory (default /tmp/vmlab/<name>):
    lab.json, lab.log            what the lab is (all `down` needs); what it did, with timings
    ceph/                        cluster-wide: ceph.conf, monmap, keyrings, osds.json
    libvirt-etc/                 the host's /etc/libvirt minus its NAT network (seed per node)
    sbin/fence_vmlab             overlaid onto each node's /usr/sbin
    ocf/vmceph -> PROJECT/agents overlaid onto each node's /usr/lib/ocf/resource.d
    pacemaker/                   corosync.conf + the seed CIB
    hosts                        the nodes' /etc/hosts
    <node>/                      per node: holder.pid, netns.ino, init.sock, nodeinit.json,
                                 log/, pids/, and the directories bind-mounted in the node
"""

import json
import os
import zlib
from pathlib import Path

from . import configs
from .util import LabError

HERE = Path(__file__).resolve().parent
DEFAULT_STATE_ROOT = "/tmp/vmlab"
DEFAULT_PROJECT_ROOT = str(HERE.parents[1])  # the checkout this lab lives in

# Fixed on purpose: domain XML written by tests (or by the agents' own tests) can name it.
SECRET_UUID = "9a1b5ce0-7c2d-4e3f-8a5b-766d63657068"
SUBNET_FIRST, SUBNET_COUNT = 160, 80  # second octets 10.160 .. 10.239 (recipes use 10.25x)


def subnet_for(name):
    """A stable second octet per lab name, so a lab keeps its addresses across runs."""
    return SUBNET_FIRST + zlib.crc32(name.encode()) % SUBNET_COUNT


def next_subnet(subnet):
    return SUBNET_FIRST + (subnet - SUBNET_FIRST + 1) % SUBNET_COUNT


def read_int(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


class Layout:
    ceph_user = "vmceph"
    pool = "rbd"
    secret_uuid = SECRET_UUID

    def __init__(self, name="lab", nodes=3, pacemaker=False, project_root=None, token_ms=1000,
                 state_root=DEFAULT_STATE_ROOT, mgr=True, subnet=None, node_prefix="n",
                 netns_prefix=None, osd_gib=4, pg_num=16, ceph_conf_extra=None,
                 checkout_agents=True, remotes=0):
        if not name.replace("-", "").isalnum() or len(name) > 24:
            raise LabError(f"lab name {name!r}: use letters, digits and '-', at most 24")
        if not 1 <= nodes <= 9:
            raise LabError("nodes must be 1..9")
        if not 0 <= remotes <= 4 or (remotes and not pacemaker):
            raise LabError("remotes must be 0..4, and needs pacemaker")
        self.name = name
        self.nodes = nodes
        self.pacemaker = pacemaker
        self.project_root = str(Path(project_root or DEFAULT_PROJECT_ROOT).resolve())
        self.token_ms = token_ms
        self.state_root = state_root
        self.state_dir = os.path.join(state_root, name)
        self.mgr = mgr
        self.node_prefix = node_prefix
        self.netns_prefix = netns_prefix or f"vmlab-{name}"
        self.osd_gib = osd_gib
        self.pg_num = pg_num
        self.ceph_conf_extra = dict(ceph_conf_extra or {})
        # False: the nodes see the host's /usr/lib/ocf/resource.d/vmceph (an installed
        # package) instead of the checkout's agents/
        self.checkout_agents = checkout_agents
        # compute-only pacemaker_remote nodes (libvirtd + QEMU + pacemaker-remoted, a Ceph
        # client configuration, no Ceph daemon, no corosync), numbered after the full nodes
        self.remotes = remotes
        # a running lab keeps the subnet it got at up (it may have moved off a taken one)
        self.subnet = subnet or self.saved_params().get("subnet") or subnet_for(name)

    def params(self):
        """The constructor arguments that describe this lab (saved in lab.json)."""
        return {"nodes": self.nodes, "pacemaker": self.pacemaker,
                "project_root": self.project_root, "token_ms": self.token_ms, "mgr": self.mgr,
                "subnet": self.subnet, "node_prefix": self.node_prefix,
                "netns_prefix": self.netns_prefix, "osd_gib": self.osd_gib,
                "pg_num": self.pg_num, "ceph_conf_extra": self.ceph_conf_extra,
                "checkout_agents": self.checkout_agents, "remotes": self.remotes}

    # ------------------------------------------------------------------ nodes and addresses
    @property
    def indexes(self):
        """1-based node numbers."""
        return range(1, self.nodes + 1)

    @property
    def remote_indexes(self):
        """Node numbers of the pacemaker_remote nodes (after the full nodes)."""
        return range(self.nodes + 1, self.nodes + self.remotes + 1)

    @property
    def all_indexes(self):
        """Every node: the full (hyperconverged) ones, then the remote ones."""
        return range(1, self.total + 1)

    @property
    def total(self):
        return self.nodes + self.remotes

    def is_remote(self, i):
        return i > self.nodes

    def node_name(self, i):
        """Hostname, Ceph mon name and Pacemaker node name of node i (remote nodes:
        remote1, remote2, ...: also the id of their ocf:pacemaker:remote resource)."""
        if i > self.nodes:
            return f"remote{i - self.nodes}"
        return f"{self.node_prefix}{i}"

    def node_ip(self, i):
        return f"10.{self.subnet}.0.{i}"

    def node_list(self):
        """(name, ip) of the full nodes: the Ceph mons and the corosync members."""
        return [(self.node_name(i), self.node_ip(i)) for i in self.indexes]

    def all_node_list(self):
        return [(self.node_name(i), self.node_ip(i)) for i in self.all_indexes]

    @property
    def network(self):
        return f"10.{self.subnet}.0.0/24"

    @property
    def mon_hosts(self):
        return [f"{self.node_ip(i)}:{configs.MON_PORT_V1}" for i in self.indexes]

    def libvirt_uri(self, i):
        """URI of node i's libvirtd from another node (migration target)."""
        return f"qemu+tcp://{self.node_ip(i)}/system"

    def pool_size(self):
        """size 3 / min_size 2 across three nodes; with fewer nodes one copy per node, min 1."""
        return (3, 2) if self.nodes >= 3 else (self.nodes, 1)

    # ------------------------------------------------------------------ namespaces
    def netns_name(self, i):
        return f"{self.netns_prefix}-{self.node_name(i)}"

    @property
    def switch_netns(self):
        return f"{self.netns_prefix}-sw"

    @staticmethod
    def switch_port(i):
        return f"p{i}"  # an interface name inside the lab's own switch namespace

    # ------------------------------------------------------------------ paths
    def path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    def node_dir(self, i, *parts):
        return os.path.join(self.state_dir, self.node_name(i), *parts)

    def holder_pid(self, i):
        """PID of node i's init, as it recorded it when it was ready (None if never)."""
        return read_int(self.node_dir(i, "holder.pid"))

    def netns_inode(self, i):
        """Inode of node i's network namespace, recorded when the namespace was made."""
        return read_int(self.node_dir(i, "netns.ino"))

    def is_ours(self, path):
        return path == self.state_dir or path.startswith(self.state_dir + "/")

    # ------------------------------------------------------------------ lab.json
    def lab_json(self):
        nodes = [{"index": i, "name": self.node_name(i), "ip": self.node_ip(i),
                  "netns": self.netns_name(i), "remote": self.is_remote(i)}
                 for i in self.all_indexes]
        return {"name": self.name, "params": self.params(), "switch": self.switch_netns,
                "nodes": nodes, "secret_uuid": self.secret_uuid, "ceph_user": self.ceph_user}

    def saved_lab_json(self):
        try:
            with open(self.path("lab.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def saved_params(self):
        return self.saved_lab_json().get("params", {})

    def saved_topology(self):
        """Names from lab.json if present (the truth after a crash), else from the parameters."""
        doc = self.saved_lab_json()
        if "switch" in doc and "nodes" in doc:
            return {"switch": doc["switch"], "nodes": doc["nodes"]}
        return {"switch": self.switch_netns,
                "nodes": [{"name": self.node_name(i), "netns": self.netns_name(i)}
                          for i in self.all_indexes]}
