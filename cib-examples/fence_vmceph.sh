#!/bin/bash
# vmceph example: add fence_vmceph (fencing through Ceph's OSD blocklist, see
# docs/fencing.md and fence_vmceph(8)) to the cluster pcs.sh builds, as a third
# fencing level after IPMI and the PDU. Like pcs.sh it works on a CIB *file*:
#
#   pcs cluster cib work.xml
#   CIB=work.xml ./pcs.sh && CIB=work.xml ./fence_vmceph.sh
#   crm_verify -x work.xml -V
#   pcs cluster cib-push work.xml --config
#
# Why last here: on these hyperconverged nodes every node runs a Ceph monitor,
# and after a crash the surviving monitors commit nothing (no blocklist entry)
# until they have re-elected, ~14 s on the lab, while the BMC answers in ~4 s.
# fence_vmceph is what still fences a node whose BMC and PDU are both dead
# (power loss of the node and its management network): the VMs come back
# instead of waiting for a person. On nodes without a monitor, or where the
# power fence is slow, make it level 1 instead (swap the level numbers).
#
# The Ceph user needs these caps ('profile rbd' cannot remove entries nor list
# monitor sessions; osd 'allow *' is for 'tell osd.N status', the proof that
# every OSD holds the fence):
#   ceph auth get-or-create client.fence mon 'allow r, allow command "osd blocklist",
#     allow command "osd blocklist ls", allow command "osd down",
#     allow command "config-key set", allow command "config-key get",
#     allow command "config-key rm", allow command sessions' osd 'allow *'
set -euo pipefail

CIB=${1:-${CIB:?usage: CIB=work.xml $0  (or: $0 work.xml)}}
[ -s "$CIB" ] || { echo "$0: $CIB is missing or empty (pcs cluster cib $CIB)" >&2; exit 1; }

p() { pcs -f "$CIB" "$@"; }

# pcs refuses a fence agent it cannot find (/usr/sbin/fence_vmceph comes with the
# vmceph package); where it is not installed (an admin workstation), force.
FORCE=()
if ! stonith_admin --metadata -a fence_vmceph >/dev/null 2>&1; then
    echo "$0: fence_vmceph not installed here: pcs is forced to accept it" >&2
    FORCE=(--force)
fi

# No node_addresses: each node's Ceph client addresses come from the node
#   attribute vmceph-ceph-addrs that the CephHealth clone publishes (it stays in
#   the CIB while the node is down, which is when it is needed).
# pcmk_host_list + static-list: one device fences every node; the plug is the
#   node name.
# allow-unhealthy-nodes=true as on the other devices: a node whose
#   #health-ceph is red may still try (it fails fast without quorum, within
#   ceph_timeout, and the fencer reports the failure).
# No 'meta provides=unfencing': as a last level it runs rarely, and unfencing
#   would make Pacemaker unfence every node before it runs anything there.
#   After a node fenced this way was repaired and rebooted, unfence it by hand:
#     stonith_admin --unfence nodeN
#   (fence_vmceph 'on': each client instance still connected from the node is
#   blocklisted on its own first, then the node-wide entries go.)
#   With fence_vmceph as level 1, add 'meta provides=unfencing' instead.
p stonith create fence-ceph fence_vmceph \
    ceph_conf=/etc/ceph/ceph.conf ceph_user=fence \
    ceph_keyring=/etc/ceph/ceph.client.fence.keyring ceph_timeout=30 \
    pcmk_host_list="node1 node2 node3" pcmk_host_check=static-list \
    op monitor interval=60s \
    meta allow-unhealthy-nodes=true "${FORCE[@]}"
for n in 1 2 3; do
    p stonith level add 3 "node$n" fence-ceph
done
