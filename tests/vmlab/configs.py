"""Text of every configuration file the lab writes. Pure functions: no I/O, easy to read.

The settings that deviate from the packages' defaults each carry the reason; most of them
exist because the whole "cluster" shares one small machine and one disk.
"""

import base64
import os
import struct
import time
from xml.sax.saxutils import escape, quoteattr

MON_PORT_V2 = 3300
MON_PORT_V1 = 6789


def ceph_secret():
    """A new cephx key as `ceph-authtool --gen-print-key` makes it: AES, created, 16 bytes."""
    now = time.time()
    raw = struct.pack("<HIIH", 1, int(now), int((now % 1) * 1e9), 16) + os.urandom(16)
    return base64.b64encode(raw).decode()


def keyring(entity, key, caps=None):
    lines = [f"[{entity}]", f"\tkey = {key}"]
    for service, cap in sorted((caps or {}).items()):
        lines.append(f'\tcaps {service} = "{cap}"')
    return "\n".join(lines) + "\n"


def ceph_conf(fsid, mons, network, size, min_size, pg_num, with_mgr, osd_bytes, extra=None):
    """ceph.conf shared by every node. mons: [(name, ip)]."""
    mon_host = ",".join(f"[v2:{ip}:{MON_PORT_V2},v1:{ip}:{MON_PORT_V1}]" for _, ip in mons)
    settings = {
        "fsid": fsid,
        "mon initial members": ",".join(name for name, _ in mons),
        "mon host": mon_host,
        "public network": network,
        "auth cluster required": "cephx",
        "auth service required": "cephx",
        "auth client required": "cephx",
        # else HEALTH_WARN AUTH_INSECURE_GLOBAL_ID_RECLAIM_ALLOWED on a fresh cluster
        "auth allow insecure global id reclaim": "false",
        "osd pool default size": size,
        "osd pool default min size": min_size,
        "osd pool default pg num": pg_num,
        "osd pool default pgp num": pg_num,
        # a fixed, small PG count: the autoscaler would only add peering work and warnings
        "osd pool default pg autoscale mode": "off",
        # a one-node lab has pools of size 1
        "mon allow pool size one": "true",
        "mon warn on pool no redundancy": "false",
        "mon allow pool delete": "true",
        # the lab's disk may well be below Ceph's 30 % free warning threshold
        "mon data avail warn": 1,
        "mon data avail crit": 0,
        # Three nodes' OSDs on two shared cores: heartbeats answered 5 s late while a test
        # restarted monitors, and OSD_SLOW_PING_TIME_* kept health at WARN past a 120 s
        # wait (make test, integration). Failure detection (osd heartbeat grace) is
        # unchanged; only the warning's threshold (ms) is raised.
        "mon warn on slow ping time": 30000,
        # a lean mgr: only the always-on modules
        "mgr initial modules": "",
        # without a mgr, health turns MGR_DOWN after this grace: make it "never" then
        "mon mgr mkfs grace": 120 if with_mgr else 315360000,
        # PG states reach `ceph status` every 1 s instead of 5: tests wait less for health
        # (reporting only; no failure detection or I/O timing changes)
        "mgr stats period": 1,
        "mon mgr digest period": 1,
        # bluestore on a sparse file: survives SIGKILL (memstore would come back empty)
        "osd objectstore": "bluestore",
        "bluestore block create": "true",
        "bluestore block size": osd_bytes,
        # the minimum the OSD accepts; the caches stay far below it in a lab anyway
        "osd memory target": 939524096,
    }
    settings.update(extra or {})
    lines = ["[global]"] + [f"{k} = {v}" for k, v in settings.items()]
    # daemons find their keys in their data directory, clients in /etc/ceph (the default)
    for daemon in ("mon", "osd", "mgr"):
        lines += ["", f"[{daemon}]", f"keyring = ${daemon}_data/keyring"]
    return "\n".join(lines) + "\n"


def libvirtd_conf(ip, host_uuid):
    return "\n".join([
        "listen_tls = 0",
        "listen_tcp = 1",
        f'listen_addr = "{ip}"',
        # the nodes trust each other: p2p migration connects node to node over TCP
        'auth_tcp = "none"',
        'auth_unix_rw = "none"',
        # every node must look like a different host, or migration refuses ("same host")
        f'host_uuid = "{host_uuid}"',
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
    ]) + "\n"


def qemu_conf(ip):
    return "\n".join([
        'user = "root"',
        'group = "root"',
        # else each domain start re-probes QEMU for seconds (/dev/kvm is root-only here)
        'security_driver = "none"',
        # all nodes share one cgroup tree and would collide on machine/qemu-<id>-<name>
        "cgroup_controllers = [ ]",
        # QEMU's stderr straight into /var/log/libvirt/qemu/<domain>.log, not through
        # virtlogd: qemu-io (Lab.guest_write) reports a failed write there and nowhere
        # else, and the line must be in the file when the monitor command returns
        'stdio_handler = "file"',
        f'migration_address = "{ip}"',
        f'migration_host = "{ip}"',
    ]) + "\n"


def corosync_conf(cluster_name, nodes, token_ms):
    """nodes: [(name, ip)]; nodeid = position + 1."""
    out = ["totem {", "    version: 2", f"    cluster_name: {cluster_name}",
           "    transport: knet", "    crypto_cipher: none", "    crypto_hash: none",
           f"    token: {token_ms}", "}", "nodelist {"]
    for nodeid, (name, ip) in enumerate(nodes, 1):
        out += ["    node {", f"        name: {name}", f"        nodeid: {nodeid}",
                f"        ring0_addr: {ip}", "    }"]
    out += ["}", "quorum {", "    provider: corosync_votequorum"]
    if len(nodes) == 2:
        out.append("    two_node: 1")
    out += ["}", "logging {", "    to_stderr: yes", "    to_logfile: no", "    to_syslog: no",
            "    timestamp: on", "}"]
    return "\n".join(out) + "\n"


def hosts_file(nodes):
    return "127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in nodes)


def secret_xml(uuid, user):
    return (f"<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
            f"<usage type='ceph'><name>client.{escape(user)} secret</name></usage></secret>\n")


def fence_primitive_xml(rsc_id, node_names, state_dir):
    """The lab's fence device, one resource that can fence every node."""
    hosts = quoteattr(" ".join(node_names))
    return (f"<primitive id='{rsc_id}' class='stonith' type='fence_vmlab'>"
            f"<instance_attributes id='{rsc_id}-ia'>"
            f"<nvpair id='{rsc_id}-hosts' name='pcmk_host_list' value={hosts}/>"
            f"<nvpair id='{rsc_id}-state' name='state_dir' value={quoteattr(state_dir)}/>"
            f"</instance_attributes><operations>"
            f"<op id='{rsc_id}-monitor' name='monitor' interval='60s'/>"
            f"</operations></primitive>")


def disk_target(index):
    """vda, vdb, ... for disk 0, 1, ..."""
    return "vd" + "abcdefghijklmnopqrstuvwxyz"[index]


def domain_xml(name, images, mon_ips, user, secret_uuid, pool="rbd", memory_mib=64):
    """A TCG guest with no OS whose disks are RBD images, reached via every mon, with cephx."""
    hosts = "".join(f"\n          <host name='{ip}' port='{MON_PORT_V1}'/>" for ip in mon_ips)
    disks = ""
    for index, image in enumerate(images):
        disks += f"""
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source protocol='rbd' name={quoteattr(f'{pool}/{image}')}>{hosts}
      </source>
      <auth username={quoteattr(user)}>
        <secret type='ceph' uuid='{secret_uuid}'/>
      </auth>
      <target dev='{disk_target(index)}' bus='virtio'/>
    </disk>"""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>{disks}
    <memballoon model='none'/>
  </devices>
</domain>
"""
