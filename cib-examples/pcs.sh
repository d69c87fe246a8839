#!/bin/bash
# vmceph example: a three-node hyperconverged cluster (node1 node2 node3; every
# node is a Ceph node *and* a hypervisor), written with pcs 0.11 against a CIB
# *file*, never the live cluster.
#
#   pcs cluster cib work.xml                # copy of the live CIB
#   CIB=work.xml ./pcs.sh                   # or: ./pcs.sh work.xml
#   crm_verify -x work.xml -V               # let Pacemaker check it
#   pcs cluster cib-push work.xml --config  # push the configuration section
#
# crmsh.crm builds the same configuration and cluster.xml is the result;
# tests/pacemaker/test_cib_examples.py checks that all three stay equivalent.
# Adapt before use: IPMI/PDU addresses and credentials, node capacities,
# VM names, domain XML paths and sizes.
set -euo pipefail

CIB=${1:-${CIB:?usage: CIB=work.xml $0  (or: $0 work.xml)}}
[ -s "$CIB" ] || { echo "$0: $CIB is missing or empty (pcs cluster cib $CIB)" >&2; exit 1; }

p() { pcs -f "$CIB" "$@"; }

# pcs reads every resource agent's meta-data and refuses an agent it cannot
# find. When this script runs where the vmceph agents are not installed (an
# admin workstation, CI), --force lets pcs write the resources anyway; the
# cluster nodes must have /usr/lib/ocf/resource.d/vmceph/ before the push.
FORCE=()
for agent in CephHealth RBDVirtualDomain; do
    if ! crm_resource --show-metadata "ocf:vmceph:$agent" >/dev/null 2>&1; then
        echo "$0: ocf:vmceph:$agent not installed here: creating vmceph resources with --force" >&2
        FORCE=(--force)
    fi
done
# The same for the fence agent fence_vmceph (/usr/sbin/fence_vmceph, from the
# vmceph package).
FENCE_FORCE=()
if ! stonith_admin --metadata -a fence_vmceph >/dev/null 2>&1; then
    echo "$0: fence_vmceph not installed here: creating its device with --force" >&2
    FENCE_FORCE=(--force)
fi

# ---------------------------------------------------------------- properties
# stonith-enabled: a VM whose stop failed, or that ran on a node that vanished,
#   may still be writing its RBD images. Only fencing makes "it is not running
#   there any more" true, so the VM may be started elsewhere. Never false.
# node-health-strategy=migrate-on-red: every node attribute named #health-*
#   counts. The CephHealth clone below publishes #health-ceph = green/yellow/red.
#   migrate-on-red: red = -INFINITY for every resource on that node (VMs
#     live-migrate away, none is placed there); yellow and green = 0.
#   Alternatives:
#   only-green: yellow counts as red too: a HEALTH_WARN (one OSD down, a
#     scrub error, clock skew...) would empty the node. Too eager when every
#     node reports the same cluster-wide Ceph state.
#   progressive: red/yellow/green add the scores in the node-health-red,
#     -yellow, -green properties: yellow can merely repel new VMs (say -100)
#     while red stays -INFINITY.
#   custom: documented as "track the attributes, leave the policy to your
#     own rules on #health-ceph"; Pacemaker 2.1.5 nevertheless scores it like
#     progressive (crm_simulate: a red node still gets -INFINITY).
#   none: health attributes are ignored; only the per-VM rules below act.
# placement-strategy=balanced: place VMs by the utilization (cpu, hv_memory)
#   declared below and spread the load, instead of counting resources per node.
# migration-limit=2: at most 2 live migrations at once per node. A node turning
#   red (migrate-on-red) is emptied in one transition: without a limit every VM
#   on it migrates at the same time over the same link, each copy takes that
#   many times longer, and a migration that outlasts its migrate_to timeout
#   (120s) is aborted and the VM is recovered by stop and start elsewhere: a
#   guest reboot instead of a move. The others follow as each one finishes.
# load-threshold=400%: Pacemaker slows its own actions down when a node's
#   load average per core passes 1.2, 1.6 and 2 times this value (0.96, 1.28
#   and 1.6 with the default 80%): "high" means one action at a time on that
#   node, and once two nodes are high, one at a time in the whole cluster
#   (batch-limit drops to half the active nodes). On a hypervisor the load
#   average counts every runnable vCPU thread of the guests, so the survivors
#   of a crash, busy with their own VMs, look overloaded exactly when they must
#   start the crashed node's VMs. Measured on the three-node test lab (load
#   about 3 per core): ten VMs of a crashed node started strictly one after
#   the other, the last writing again 40.5 s after the crash against 11.1 s
#   for a single VM; with 400% they started together. Pacemaker's separate
#   check of the CIB daemon's own CPU use still throttles.
# node-action-limit=16: at most 16 actions at once per node (the default is 2
#   per core: 4 on the lab's 2-core nodes, which left 2 of the 10 starts for a
#   second round, 64 on a 32-thread node). A VM start mostly waits on Ceph and
#   QEMU, not the CPU: 16 lets a survivor start its share of a crashed node's
#   VMs at once, and bounds the Ceph sessions one node opens together. With
#   both, the lab's last of ten VMs wrote again 1.45x as late as a single VM.
# batch-limit: left at the default (0: no cluster-wide cap unless nodes are
#   loaded). Every running QEMU already holds a monitor session; a few dozen
#   short agent sessions more do not load the monitors, and a cap would only
#   queue the recoveries behind each other again.
# Two nodes plus a quorum device (corosync-qdevice): also set
#   priority-fencing-delay=15s. When the two lose each other and both still
#   have quorum through the device's tie-breaker, each fences the other; the
#   delay holds back the fencing of the node whose resources have the higher
#   total priority (the VMs' priority meta attribute below), so that node wins
#   and keeps its VMs. Keep it below the fencing timeout and leave
#   pcmk_delay_base/pcmk_delay_max off the devices (they add to it). With three
#   nodes and more the majority fences the minority: no race, no delay needed.
# start-failure-is-fatal=false: a failed start counts one failure toward
#   migration-threshold (below), like a failed monitor, instead of banning the
#   VM from that node for failure-timeout. With Pacemaker's default (true) a
#   start that timed out or was killed banned its node for 10 minutes: two of
#   those on two nodes of three, then the third node lost, and the VM ran
#   nowhere although two nodes were fine (docs/reliability.md: the fault soak's
#   seed 1210, fault 120, and seeds 1205 and 1208 before it). A start the agent
#   refuses (a second writer) is refused in well under a second, so three
#   tries on one node cost little; a start that hangs is tried up to 3 times
#   there (3 x the start timeout) before the VM goes elsewhere.
p property set stonith-enabled=true node-health-strategy=migrate-on-red \
    placement-strategy=balanced migration-limit=2 load-threshold=400% \
    node-action-limit=16 start-failure-is-fatal=false

# ---------------------------------------------------------- resource defaults
# resource-stickiness=100: a running VM stays where it is unless something
#   outweighs 100; without it the scheduler may shuffle VMs (live migrations)
#   whenever the balance changes. pcs 0.11 'resource move' refuses to work
#   without it. It is larger than the +50 "prefer green" rule below, so that
#   preference never moves a running VM by itself.
# migration-threshold=3: after 3 failures on one node the resource is banned
#   there and recovered elsewhere; a VM that keeps crashing is not restarted
#   in place forever.
# failure-timeout=10min: the ban above expires, so a node repaired after a
#   transient problem is usable again without a manual 'resource cleanup'
#   (checked at cluster-recheck-interval, 15 min by default). A failed start
#   counts as one failure (start-failure-is-fatal=false above). Shorter means
#   sooner back, and sooner retried on a node that is still broken.
p resource defaults update resource-stickiness=100 migration-threshold=3 failure-timeout=10min
# timeout=60s for any operation not listed on a resource (probes, the fence
#   devices' start/stop); the vmceph operations set their own.
p resource op defaults update timeout=60s

# ------------------------------------------------------------------- fencing
# Power, level 2 (after fence_vmceph below): one IPMI (BMC) device per node.
# pcmk_host_list + static-list: the
# fencer knows which node each device can kill without asking the device
# (fence_ipmilan cannot list "ports"). lanplus=1 = IPMI 2.0. In production put
# the password in a file readable by root and use password_script=... instead.
# 192.0.2.0/24 is a documentation network: replace with the real BMCs.
# allow-unhealthy-nodes=true on every fence device: the fencer only uses a
# device on a node where the device may run, and it applies node health when it
# decides that. Without this, a node whose #health-ceph is red could not fence
# anybody, and when Ceph is red on every node (a cluster-wide Ceph outage)
# nobody could: fencing must not depend on Ceph.
for n in 1 2 3; do
    p stonith create "fence-ipmi-node$n" fence_ipmilan \
        ip="192.0.2.1$n" username=admin password=change-me lanplus=1 \
        pcmk_host_list="node$n" pcmk_host_check=static-list \
        op monitor interval=60s \
        meta allow-unhealthy-nodes=true
    # Never where the device's own victim runs: the node being fenced may be
    # the one that is hung, and a node asked to power itself off cannot report
    # success. Running it on a peer also means its monitor checks that a *peer*
    # can reach this BMC, which is what fencing needs.
    p constraint location "fence-ipmi-node$n" avoids "node$n"
done
# Level 3: a switched PDU that cuts the node's power outlet. Used only when
# levels 1 and 2 fail, typically because the node lost power or its BMC died (then
# IPMI cannot confirm "off", but the outlet can). pcmk_host_map maps node ->
# outlet. With dual power supplies, add a second PDU device to the same level
# (both must succeed).
p stonith create fence-pdu fence_apc_snmp \
    ip=192.0.2.20 community=private \
    pcmk_host_map="node1:1;node2:2;node3:3" pcmk_host_check=static-list \
    op monitor interval=60s \
    meta allow-unhealthy-nodes=true
# Level 1: fence_vmceph (docs/fencing.md) cuts every Ceph client of the node off
# the OSDs (one host-wide blocklist entry per address), whether or not its power
# switch answers, and reports success only once every up OSD holds the map that
# carries it. A VM's RBD writer is what must be fenced, so this is enough to
# restart the VM elsewhere; power (levels 2 and 3) runs only when Ceph cannot
# commit the fence (no monitor quorum: it fails within ceph_timeout).
# Power first instead: on these hyperconverged nodes (a mon on every node) the
# survivors of a crash commit nothing until their monitors re-elect (~8.6-14 s
# in the lab; 3.1-4.8 s with the monitor settings of docs/fencing.md), while a
# BMC answers in ~4 s; a partitioned node's OSD, however,
# keeps its placement groups waiting until fence_vmceph marks it down. Where the
# power fence works and crashes matter more than partitions, put it first:
# fence-power-first.{sh,crm,xml} rewrite this topology (README.md).
# No node_addresses: each node's addresses come from the node attribute
#   vmceph-ceph-addrs that CephHealth publishes (kept in the CIB while the node
#   is down, which is when it is needed).
# pcmk_host_list + static-list: this one device fences every node; the plug is
#   the node name.
# ceph_user=fence: the caps docs/fencing.md gives ('profile rbd' cannot remove
#   the entries at unfencing).
# provides=unfencing: when a fenced node rejoins, Pacemaker runs the device's
#   'on' (unfencing) before it starts anything there: it keeps the client
#   instances still connected from the node blocklisted one by one, then removes
#   the host-wide entries, so only new clients (QEMUs started from now on)
#   write. Reboot a node fenced this way before it rejoins: a stale QEMU
#   connected to no monitor at that moment cannot be seen (docs/fencing.md).
#   Stale domains the node's probes then find are stopped there
#   (multiple-active=stop_unexpected on the VMs).
# allow-unhealthy-nodes=true as on every device: fencing must not depend on the
#   health of Ceph as seen from the fencing node.
p stonith create fence-ceph fence_vmceph \
    ceph_conf=/etc/ceph/ceph.conf ceph_user=fence \
    ceph_keyring=/etc/ceph/ceph.client.fence.keyring ceph_timeout=30 \
    pcmk_host_list="node1 node2 node3" pcmk_host_check=static-list \
    op monitor interval=60s \
    meta allow-unhealthy-nodes=true provides=unfencing "${FENCE_FORCE[@]}"
for n in 1 2 3; do
    p stonith level add 1 "node$n" fence-ceph
    p stonith level add 2 "node$n" "fence-ipmi-node$n"
    p stonith level add 3 "node$n" fence-pdu
done

# -------------------------------------------------------- Ceph health clone
# CephHealth runs on every node and publishes the node attribute #health-ceph
# (green/yellow/red: can this node reach a Ceph quorum and serve I/O for the
# listed pools?). It is the input of node-health-strategy above.
# allow-unhealthy-nodes=true: the health strategy must not push the health
#   agent itself off a red node, or nothing would ever turn that node green
#   again.
# interleave=true: any clone ordered against this one depends only on the
#   instance on its own node, not on all of them (no effect on the primitive
#   VMs, but keeps later clones from restarting cluster-wide).
# --no-default-ops: only the operations written here, whether or not pcs can
#   read the agent's meta-data (same CIB on every machine).
# dampen=25s: attrd writes a changed #health-ceph only once it has held for
#   25 s, longer than one monitor interval (10s) plus one Ceph check (up to
#   ceph_timeout, 10s). Every node sees the same cluster-wide blips (PGs
#   peering for a second after any OSD failure, monitors re-electing after a
#   node dies), and one red sample on every node at once stops every VM
#   (migrate-on-red): on the lab, both survivors of a node crash were red for
#   one sample and all VMs stopped. A shorter dampening (the agent's default is
#   5s) cannot absorb a one-sample blip. A node that really cannot use Ceph is
#   still emptied, 25 s later.
# Clone meta options come right after the clone id: pcs 0.11.5 attaches a
# 'meta' keyword written after 'clone' to the primitive, not the clone.
p resource create ceph-health ocf:vmceph:CephHealth \
    ceph_conf=/etc/ceph/ceph.conf ceph_user=vmceph attribute=#health-ceph pools=rbd \
    dampen=25s \
    op monitor interval=10s timeout=30s \
       start timeout=30s \
       stop timeout=30s \
    clone ceph-health-clone allow-unhealthy-nodes=true interleave=true \
    --no-default-ops "${FORCE[@]}"

# ------------------------------------------------------------ node capacity
# Hyperconverged: the Ceph daemons (mon, mgr, OSDs; osd_memory_target is 4 GiB
# per OSD by default) and the host share the node with the VMs, but Pacemaker
# does not manage them. So give Pacemaker only what is left for VMs: here a
# 32-thread / 256 GiB node with 4 OSDs keeps 4 threads and 64 GiB back.
# hv_memory in MiB.
for n in 1 2 3; do
    p node utilization "node$n" cpu=28 hv_memory=196608
done

# ---------------------------------------------------------------------- VMs
# RBDVirtualDomain: a libvirt domain whose disks are RBD images, started only
# when no other node still writes them.
# allow-migrate=true: a move is a live migration: migrate_to on the source,
#   migrate_from on the target, then stop on the source.
# multiple-active=stop_unexpected: when the VM is found active on more than one
#   node, stop it only where it should not run and leave the expected instance
#   alone. The default (stop_start) stops it everywhere and starts it again: the
#   guest reboots. Cases: a live migration whose stop on the source failed (the
#   source is fenced, the target's guest keeps running); a node fenced through
#   Ceph (or partitioned) that rejoins with its stale QEMU, which the probe
#   finds (stopped there; it could not write since the fence).
# priority: when capacity runs short (two nodes left), higher-priority VMs are
#   placed first and lower ones may stay stopped.
# utilization: what the VM takes from the node capacity above (vCPUs, MiB).
#   Keep it equal to the domain XML: the agent (autoset_utilization_cpu and
#   _hv_memory, on by default) rewrites it from the domain at start and
#   migrate_from; the values here size the first placement.
# autoset_utilization_host_memory=false: the agent (like VirtualDomain) would
#   also write a host_memory utilization, for which the nodes above declare no
#   capacity; with placement-strategy=balanced a node without capacity for an
#   attribute cannot host the resource, so every VM would be stopped right after
#   its first start ("vm1 cannot run anywhere", seen on the three-node lab).
# hypervisor is left unset (libvirt's default URI, qemu:///system for root): the
#   agent declares it unique="1" so that changing it restarts the VM (every other
#   parameter reloads, docs/parameters.md), and pcs 0.11 refuses a second VM with
#   the same explicit value ("is not unique ... use --force to override").
# Operations (the agent's meta-data advertises the same timeouts):
#   start 90s: includes waiting for Ceph quorum and the writer check;
#   stop 90s: graceful shutdown, then destroy. A stop that fails (domain still
#     there at the deadline) fences the node: by design, because only fencing
#     makes it safe to start the VM, i.e. its RBD writer, elsewhere;
#   monitor every 10s, 30s timeout (asks libvirt only);
#   deep monitor every 300s, 60s timeout, OCF_CHECK_LEVEL=20: also asks Ceph
#     whether this node's QEMU is the only writer of each image (a second writer
#     fails it as split brain; Ceph unreachable is only a warning);
#   migrate_to 120s: the live migration itself, aborted at the deadline;
#   migrate_from 60s: the target confirms the domain runs there.
vm() { # vm NAME PRIORITY CPUS MEMORY_MIB
    p resource create "$1" ocf:vmceph:RBDVirtualDomain \
        config="/etc/vmceph/domains/$1.xml" \
        migration_transport=tcp ceph_conf=/etc/ceph/ceph.conf ceph_user=vmceph \
        autoset_utilization_host_memory=false \
        meta allow-migrate=true priority="$2" multiple-active=stop_unexpected \
        op start timeout=90s \
           stop timeout=90s \
           monitor interval=10s timeout=30s \
           monitor interval=300s timeout=60s OCF_CHECK_LEVEL=20 \
           migrate_to timeout=120s \
           migrate_from timeout=60s \
        --no-default-ops "${FORCE[@]}"
    p resource utilization "$1" cpu="$3" hv_memory="$4"

    # Start order: Optional, not Mandatory. Optional still orders the two
    # when they start (or stop) in the same transition: at cluster start-up
    # the health agents start before the VMs, at shutdown the VMs stop first.
    # Mandatory would in addition *restart* (stop + start, no live migration)
    # every VM on a node whenever the CephHealth instance there restarts, e.g.
    # after one monitor timeout of the health agent: crm_simulate shows
    # "restart vm3 ... reason=required ceph-health-clone running". A guest
    # reboot for a hiccup of a monitoring agent is worse than the risk it
    # guards against; the real gates are the health attribute below and the
    # agent's own checks at start.
    p constraint order start ceph-health-clone then start "$1" kind=Optional \
        id="order-ceph-health-then-$1"

    # Belt and braces: node-health-strategy already gives a red node
    # -INFINITY, but that depends on one cluster-wide property staying set
    # (someone switching it to none while debugging) and on
    # allow-unhealthy-nodes not being set for VMs by accident (e.g. in
    # resource defaults). This rule keeps the VM off a red node regardless.
    # Single-quoted: a word starting with # is a shell comment.
    p constraint location "$1" rule constraint-id="$1-avoid-red" score=-INFINITY '#health-ceph' eq red
    # Prefer green over yellow for new placements and recoveries. 50 is below
    # the stickiness (100), so a running VM is not moved for it.
    p constraint location "$1" rule constraint-id="$1-prefer-green" score=50 '#health-ceph' eq green
}
vm vm1 10 4 8192
vm vm2 5 2 4096
vm vm3 1 8 16384
