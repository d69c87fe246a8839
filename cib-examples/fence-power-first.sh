#!/bin/bash
# vmceph example: the reverse fencing topology, power first. pcs.sh puts
# fence_vmceph (fencing through Ceph's OSD blocklist, docs/fencing.md and
# fence_vmceph(8)) at level 1, IPMI at level 2 and the PDU at level 3. Run after
# pcs.sh on the same CIB file, this script makes it IPMI 1, PDU 2, fence_vmceph 3:
#
#   pcs cluster cib work.xml
#   CIB=work.xml ./pcs.sh && CIB=work.xml ./fence-power-first.sh
#   crm_verify -x work.xml -V
#   pcs cluster cib-push work.xml --config
#
# crmsh: fence-power-first.crm (crm -f), XML: fence-power-first.xml (cibadmin);
# both do the same to crmsh.crm's and cluster.xml's configuration.
#
# Why power first: on hyperconverged nodes (every node runs a Ceph monitor) the
# surviving monitors commit nothing (no blocklist entry) after a crash until
# they have re-elected, ~8.6-14 s in the lab (3.1-4.8 s with the monitor
# settings of docs/fencing.md), while a BMC answers in ~4 s. Why
# keep fence_vmceph at all: it still fences a node whose BMC and PDU are both
# dead (power loss of the node and its management network), so the VMs come
# back instead of waiting for a person. Where partitions matter more than
# crashes (a cut-off node's OSD keeps its placement groups waiting until
# fence_vmceph marks it down), or the power fence is slow, keep pcs.sh's order.
set -euo pipefail

CIB=${1:-${CIB:?usage: CIB=work.xml $0  (or: $0 work.xml)}}
[ -s "$CIB" ] || { echo "$0: $CIB is missing or empty (pcs cluster cib $CIB)" >&2; exit 1; }

p() { pcs -f "$CIB" "$@"; }

for n in 1 2 3; do
    p stonith level clear target "node$n"
    p stonith level add 1 "node$n" "fence-ipmi-node$n"
    p stonith level add 2 "node$n" fence-pdu
    p stonith level add 3 "node$n" fence-ceph
done
# No provides=unfencing on a last level: it runs rarely, and with it Pacemaker
# unfences every node (fence_vmceph 'on', which needs Ceph's monitor quorum)
# before it runs anything there, so a node could not start its VMs while Ceph
# is unreachable from the fencer. After a node fenced through Ceph was repaired
# and rebooted, unfence it by hand:
#     stonith_admin --unfence nodeN
# (fence_vmceph 'on': each client instance still connected from the node is
# blocklisted on its own first, then the node-wide entries go.)
p stonith meta fence-ceph provides=
