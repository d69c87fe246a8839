"""Parameters and actions of ocf:vmceph:RBDVirtualDomain, declared once.

The first 27 are the parameters of ocf:heartbeat:VirtualDomain (resource-agents 4.12) with
the same names, types, defaults and meaning, so a resource can switch its type and keep its
instance attributes. Those that make no sense for RBD-backed domains (the local qcow2
copy-on-write options) are accepted and documented, and validation refuses a non-default
value with the reason: never silently ignored. The rest are vmceph's own.
"""

from vmceph.ocf import (Action, AgentSpec, Param, absolute_path, attribute_name, ceph_id,
                        directory_or_absent, executables, libvirt_uri, plain_name,
                        regular_file, transport_name)

_QCOW = ("it creates local qcow2 copy-on-write files; an RBD-backed domain gets the same "
         "from an RBD clone of a protected snapshot (rbd clone), which every node can reach")


# Ranges (issue 16: migrateport 65536 and 2^63 passed validation). The upper bounds are
# what the value can mean: a TCP port; a downtime of an hour; a bandwidth in MiB/s that
# fits libvirt's 32-bit unsigned long; a blocklist entry of ten years.
PORT = dict(minimum=1, maximum=65535)
DOWNTIME_MS = dict(minimum=0, maximum=3600000)
SPEED_MIBS = dict(minimum=0, maximum=2 ** 31 - 1)
BLOCKLIST_S = dict(minimum=60, maximum=10 * 365 * 86400)


def _abs_path(v):
    absolute_path(v)


def _config_value(v):
    # a file (absolute path) or a definition kept in Ceph (vmceph.defstore)
    from vmceph.defstore import parse_uri
    if parse_uri(v) is None:
        absolute_path(v)


def _config_here(v):
    # a definition in Ceph is read at start/migration (and kept as a local copy): nothing
    # to find on this node beforehand
    from vmceph.defstore import is_uri
    if not is_uri(v):
        regular_file(v)


def _any_uri(v):
    # the 'ext' transport is refused by validation unless allow_ext_transport is set: the
    # rule involves two parameters, so it is not a check of the value alone
    if v:
        libvirt_uri(v, allow_ext=True)


def _transport(v):
    if v:
        transport_name(v, allow_ext=True)


def _host_suffix(v):
    if v and not all(c.isascii() and (c.isalnum() or c in ".-") for c in v):
        raise ValueError("a host name suffix contains only ASCII letters, digits, '.' and '-'")


def _user(v):
    if v:
        plain_name(v)
        if "@" in v or ":" in v:
            raise ValueError("a user name contains no '@' or ':'")


def _no_space(v):
    if any(c.isspace() for c in v):
        raise ValueError("a URI contains no white space")


SHUTDOWN_MODE_NAMES = ("acpi", "agent", "initctl", "signal", "paravirt")


def _shutdown_modes(v):
    # virsh shutdown --mode takes a comma-separated list, and so does stop
    bad = [m for m in v.split(",") if m.strip() not in SHUTDOWN_MODE_NAMES]
    if v.strip() and bad:
        raise ValueError("unknown shutdown mode %s (accepted: %s, comma-separated)"
                         % (", ".join(repr(m) for m in bad), ", ".join(SHUTDOWN_MODE_NAMES)))


INHERITED = [
    Param("config", required=True, unique=True, inherited=True, check=_config_value,
          local=_config_here,
          shortdesc="Virtual domain configuration file",
          longdesc="Absolute path of the libvirt domain XML of this virtual machine. It must "
                   "be the same on every node that may run it (shared storage or config "
                   "management). Its RBD disks are the ones the agent guards. Or "
                   "ceph:POOL/NAME (ceph:POOL/NAMESPACE/NAME): the definition of domain NAME "
                   "kept in Ceph ('vmceph config put', docs/definitions.md), read at every "
                   "start and migration with ceph_conf/ceph_user; each node keeps a local "
                   "copy of the last one it used for probe, monitor and stop."),
    Param("hypervisor", inherited=True, unique=True, check=_any_uri,
          shortdesc="Hypervisor URI",
          longdesc="libvirt URI of the local hypervisor. Unset: what 'virsh --quiet uri' "
                   "answers on the node at start (libvirt's default URI), remembered for "
                   "monitor and stop; qemu:///system when virsh cannot tell."),
    Param("force_stop", type="boolean", default=False, inherited=True,
          shortdesc="Always force shutdown on stop",
          longdesc="Destroy the domain on stop at once, instead of asking the guest to shut "
                   "down first and destroying it only when the graceful part of the stop "
                   "timeout has run out."),
    Param("migration_transport", default="", inherited=True, check=_transport,
          shortdesc="Remote hypervisor transport",
          longdesc="Transport of the URI of the target's libvirtd during a live migration: "
                   "ssh, libssh, libssh2, tcp or tls (ext only with allow_ext_transport). "
                   "The URI is the hypervisor URI with this transport and the target's host "
                   "name put in, its driver, port, path and query kept (qemu:///session and "
                   "tcp: qemu+tcp://TARGET/session). Empty: the hypervisor URI's own "
                   "transport (libvirt's default when it has none). Validation refuses any "
                   "other value."),
    Param("migration_user", inherited=True, check=_user,
          shortdesc="Remote username for the remoteuri",
          longdesc="User name placed in the computed remote URI (USER@TARGET). Ignored when "
                   "remoteuri is set."),
    Param("migration_downtime", type="integer", default=0, inherited=True, **DOWNTIME_MS,
          shortdesc="Live migration downtime",
          longdesc="Maximum tolerated downtime of the guest at the end of a live migration, "
                   "in milliseconds (0 = libvirt's default)."),
    Param("migration_speed", type="integer", default=0, inherited=True, **SPEED_MIBS,
          shortdesc="Live migration speed",
          longdesc="Bandwidth cap of a live migration in MiB/s (0 = unlimited)."),
    Param("migration_network_suffix", default="", inherited=True, check=_host_suffix,
          shortdesc="Migration network host name suffix",
          longdesc="Migrate over a dedicated network: the suffix is appended to the target's "
                   "node name (before the first dot of a fully qualified name) to form the "
                   "host name used for the remote URI and the migration URI. That name must "
                   "resolve on every node."),
    Param("migrateuri", inherited=True, check=_no_space,
          shortdesc="Custom migrateuri for migration state transfer",
          longdesc="URI over which QEMU sends the migration stream, e.g. tcp://%n-mig:49152. "
                   "%n is replaced by the target node's name. Overrides "
                   "migration_network_suffix and migrateport for the stream."),
    Param("migrate_options", inherited=True,
          shortdesc="live migrate options",
          longdesc="Extra options of the live migration, in virsh migrate's spelling; the "
                   "agent calls libvirt itself and maps each to libvirt's flag or typed "
                   "parameter. Flags: --tunnelled, --persistent, --undefinesource, "
                   "--change-protection, --unsafe, --compressed, --abort-on-error, "
                   "--auto-converge, --rdma-pin-all, --tls, --parallel, --zerocopy (--live, "
                   "--p2p and --verbose are accepted: always done, progress is logged). With "
                   "a value (--opt VALUE or --opt=VALUE): --migrateuri URI (%n = target "
                   "node), --bandwidth MiB/s (wins over migration_speed), "
                   "--parallel-connections, --tls-destination, --comp-methods, "
                   "--comp-mt-level, --comp-mt-threads, --comp-mt-dthreads, "
                   "--comp-xbzrle-cache, --auto-converge-initial, --auto-converge-increment, "
                   "--postcopy-bandwidth, --graphicsuri, --listen-address. As virsh does: "
                   "--timeout SECONDS suspends the guest after that time so that the "
                   "migration converges, or with --timeout-postcopy switches to post-copy; "
                   "--postcopy --postcopy-after-precopy switches to post-copy after the first "
                   "pass over the memory. --postcopy alone is refused (nothing would start "
                   "post-copy). Options that cannot apply are refused by validation with the "
                   "reason: storage copy (--copy-storage-*, --migrate-disks: the RBD disks are "
                   "shared), --offline, --direct, --suspend, --dname, --xml, "
                   "--persistent-xml, --postcopy-resume."),
    Param("monitor_scripts", default="", inherited=True, multiline=True, local=executables,
          shortdesc="space-separated list of monitor scripts",
          longdesc="Programs that check services inside the guest; each must exit 0. They run "
                   "at every recurring monitor, and start and migrate_from wait (within "
                   "their timeout) until they all succeed."),
    Param("autoset_utilization_cpu", type="boolean", default=True, inherited=True,
          shortdesc="Enable auto-setting the CPU utilization of the resource",
          longdesc="Set the resource's 'cpu' utilization to the domain's current vCPU count "
                   "(<vcpu current='N'>: N, not the hot-plug maximum). Done at "
                   "start and migrate_from (the values cannot change while the domain runs), "
                   "not at every monitor."),
    Param("autoset_utilization_host_memory", type="boolean", default=True, inherited=True,
          shortdesc="Enable auto-setting the host_memory utilization of the resource",
          longdesc="Set the resource's 'host_memory' utilization (MiB) from the domain's "
                   "maximum memory, at start and migrate_from."),
    Param("autoset_utilization_hv_memory", type="boolean", default=True, inherited=True,
          shortdesc="Enable auto-setting the hv_memory utilization of the resource",
          longdesc="Set the resource's 'hv_memory' utilization (MiB) from the domain's maximum "
                   "memory, at start and migrate_from."),
    Param("unset_utilization_cpu", type="boolean", default=False, inherited=True,
          shortdesc="Enable auto-removing the CPU utilization of the resource",
          longdesc="Remove the resource's 'cpu' utilization at start and migrate_from."),
    Param("unset_utilization_host_memory", type="boolean", default=False, inherited=True,
          shortdesc="Enable auto-removing the host_memory utilization of the resource",
          longdesc="Remove the resource's 'host_memory' utilization at start and migrate_from."),
    Param("unset_utilization_hv_memory", type="boolean", default=False, inherited=True,
          shortdesc="Enable auto-removing the hv_memory utilization of the resource",
          longdesc="Remove the resource's 'hv_memory' utilization at start and migrate_from."),
    Param("migrateport", type="integer", inherited=True, **PORT,
          shortdesc="Port for migrateuri",
          longdesc="Port of the migration stream in the computed migration URI (tcp://TARGET:"
                   "PORT). Unset: libvirt picks a port."),
    Param("remoteuri", inherited=True, check=_any_uri,
          shortdesc="Custom remoteuri to communicate with a remote hypervisor",
          longdesc="URI of the target's libvirtd for a live migration, e.g. "
                   "qemu+tls://%n/system (%n = target node name). Overrides "
                   "migration_transport, migration_user and migration_network_suffix."),
    Param("save_config_on_stop", type="boolean", default=False, inherited=True,
          shortdesc="Save running VM's config back to its config file",
          longdesc="Write the running domain's definition back to the config file, as "
                   "ocf:heartbeat:VirtualDomain does, at stop, migrate_to, migrate_from and "
                   "every recurring monitor, so changes made while it runs survive. Only "
                   "when it changed, and only a definition that parses and has the domain's "
                   "name and UUID; atomically, keeping a symbolic link, the mode and the "
                   "owner, never readable by others (it may hold secrets). Best-effort: if it "
                   "fails (say, the file's directory is not mounted), a warning is logged and "
                   "the action goes on."),
    Param("sync_config_on_stop", type="boolean", default=False, inherited=True,
          shortdesc="Save running VM's config back to its config file",
          longdesc="Like save_config_on_stop (which it implies), then, after each write, "
                   "run 'csync2 -x CONFIG' to copy that file (only) to the other nodes. "
                   "csync2 must be installed and set up."),
    Param("snapshot", default="", inherited=True, check=_abs_path, local=directory_or_absent,
          shortdesc="Restore state on start/stop",
          longdesc="Directory for the guest's memory state: stop saves the running domain "
                   "there (libvirt save) instead of shutting it down, and start restores it "
                   "when a state file exists. Incompatible with force_stop. On a cluster, the "
                   "directory must be shared, or a restore on another node starts the guest "
                   "from scratch. A state is restored only if the guest has not run since it "
                   "was saved (the generation in the first guarded image's metadata, "
                   "vmceph.generation, is still the one saved with it); a stale one is "
                   "deleted with a warning and the guest boots from its disks. Saving is "
                   "best-effort: if it fails, stop shuts the domain down or destroys it."),
    Param("backingfile", default="", inherited=True, unsupported=_QCOW,
          shortdesc="Backing file of a copy-on-write image",
          longdesc="ocf:heartbeat:VirtualDomain's local copy-on-write mode."),
    Param("stateless", type="boolean", default=False, inherited=True, unsupported=_QCOW,
          shortdesc="Recreate the copy-on-write image at each start",
          longdesc="ocf:heartbeat:VirtualDomain's stateless mode, built on backingfile."),
    Param("copyindirs", default="", inherited=True, unsupported=_QCOW,
          shortdesc="Directories to copy into a stateless image",
          longdesc="ocf:heartbeat:VirtualDomain's virt-copy-in for the stateless mode."),
    Param("shutdown_mode", default="", inherited=True, check=_shutdown_modes,
          shortdesc="Instruct virsh to use specific shutdown mode",
          longdesc="How stop asks the guest to shut down (virsh shutdown --mode): acpi, agent "
                   "(QEMU guest agent), initctl, signal or paravirt; several may be given "
                   "comma-separated. Empty: the hypervisor's default. Unlike "
                   "ocf:heartbeat:VirtualDomain 4.12, which reads another variable, this "
                   "setting is applied."),
    Param("start_resources", type="boolean", default=False, inherited=True,
          shortdesc="Ensure the needed virtual storage pools and networks are started",
          longdesc="Before start and before a live migration, start the libvirt networks and "
                   "storage pools the domain uses, if they are inactive."),
]

OWN = [
    Param("ceph_conf", default="/etc/ceph/ceph.conf", check=_abs_path, local=regular_file,
          shortdesc="Ceph configuration file",
          longdesc="Ceph configuration the agent uses to reach the cluster of the domain's "
                   "RBD disks (monitor addresses, keyring path)."),
    Param("ceph_user", default="", check=ceph_id,
          shortdesc="Ceph client id",
          longdesc="Ceph client id of the agent, without 'client.' (e.g. vmceph). Empty: "
                   "librados' default (admin). The agent needs mon 'profile rbd' and osd "
                   "'profile rbd pool=...' caps: enough to list lockers and watchers, add "
                   "blocklist entries and break locks; it never takes a lock."),
    Param("ceph_keyring", default="", check=_abs_path, local=regular_file,
          shortdesc="Ceph keyring",
          longdesc="Keyring of ceph_user. Empty: the keyring setting of ceph_conf."),
    Param("node_addresses", default="", multiline=True,
          shortdesc="Node names to Ceph client addresses",
          longdesc="Maps the addresses Ceph clients of each node use to the node: "
                   "'node1=10.0.0.1,10.0.1.1 node2=10.0.0.2'. The agent tells from this which "
                   "node holds or watches an image. Other sources, used after this one: the "
                   "addresses each node's CephHealth publishes (node attribute "
                   "vmceph-ceph-addrs) and name resolution of the node names."),
    Param("unknown_client_policy", default="refuse", choices=("refuse", "blocklist"),
          shortdesc="Policy for writers at unknown addresses",
          longdesc="What start does when an image is open read-write by a client at an "
                   "address no source maps to a cluster node: refuse (default) fails the "
                   "start and names the client; blocklist fences that client off the image "
                   "and starts. Choose blocklist only if no system outside this cluster may "
                   "legitimately write these images."),
    Param("blocklist_expire", type="integer", default=3600, **BLOCKLIST_S,
          shortdesc="Blocklist expiry (s)",
          longdesc="Lifetime in seconds of the blocklist entries the agent adds for dead or "
                   "fenced clients. A blocklisted QEMU can never write again, even after the "
                   "entry expires (its session is gone); the entry only has to outlive the "
                   "client's process, which the fencing of its node ends."),
    Param("membership", default="", multiline=True,
          shortdesc="Static membership (testing, no Pacemaker)",
          longdesc="Only for running the agent outside a Pacemaker cluster (tests, 'vmceph "
                   "check'): the state of each node, 'node1=member node2=fenced "
                   "node3=unclean'. Empty (always, in a cluster): asked from Pacemaker "
                   "(crm_mon)."),
    Param("health_attribute", default="#health-ceph", check=attribute_name,
          shortdesc="Node health attribute",
          longdesc="Node attribute CephHealth publishes; migrate_to refuses a target where it "
                   "is red."),
    Param("allow_ext_transport", type="boolean", default=False,
          shortdesc="Allow libvirt's ext transport",
          longdesc="Accept hypervisor, remoteuri or migration_transport with libvirt's 'ext' "
                   "transport (driver+ext://...?command=PROGRAM), which runs PROGRAM at every "
                   "connection: every probe, monitor and stop. Refused unless this is true."),
    Param("unguarded_disks", default="",
          shortdesc="Disks declared unguarded (target names)",
          longdesc="Target device names (e.g. 'vdb vdc', as in the disk's <target dev=>) of "
                   "writable disks that may be RBD images but that the agent cannot resolve "
                   "to one: a volume of a storage pool libvirt cannot describe on this node, "
                   "a /dev/rbdN the kernel does not map, a device stacked on a krbd device "
                   "(LVM, partitions of a pool). Without this parameter such a disk fails "
                   "validation, because nobody would check that it has one writer; listing "
                   "it declares that the administrator guarantees that by other means. A "
                   "disk the agent does resolve to an RBD image stays guarded even if listed "
                   "(a warning is logged). Network RBD disks, RBD pool volumes and mapped "
                   "krbd devices are resolved; see docs/disks.md."),
]

PARAMS = INHERITED + OWN

ACTIONS = [
    Action("start", "90s"),
    Action("stop", "90s"),
    Action("monitor", "30s", interval="10s", depth=0),
    Action("status", "30s", interval="10s", depth=0),
    # OCF_CHECK_LEVEL 10 adds Ceph's quorum, 20 the sole-writer check of every guarded
    # image (see LONGDESC); advertised so that tools offer them (pcs copies every advertised
    # action into a new resource's operations)
    Action("monitor", "30s", interval="60s", depth=10),
    Action("monitor", "60s", interval="300s", depth=20),
    Action("migrate_to", "120s"),
    Action("migrate_from", "60s"),
    Action("reload", "60s"),
    Action("meta-data", "5s"),
    Action("validate-all", "10s"),
]

LONGDESC = """\
Runs a libvirt/KVM virtual machine whose disks are Ceph RBD images, as \
ocf:heartbeat:VirtualDomain does and with the same parameters, and makes sure no two nodes \
ever write the same image.

Before start and live migration it checks Ceph monitor quorum and, for every RBD disk \
that is neither read-only nor shareable, which clients hold the image's exclusive lock \
and watch it. It refuses to start a second writer (on a live cluster member, a lost node \
not yet fenced, this node, or an unknown address), naming the image, client, address and \
node. A writer left by a node Pacemaker has fenced, or a lock holder whose client is gone, \
is blocklisted and its lock broken at once, so the new VM does not stall ~30 s on its \
first write. The agent never takes an RBD lock of its own.

Stop needs no Ceph. Monitor at depth 0 asks libvirt only; OCF_CHECK_LEVEL 10 adds Ceph \
quorum, 20 adds a check that this node's QEMU is the only writer of each guarded image \
(a second one is reported as split brain). When libvirt cannot be asked, a recurring \
monitor fails (the state is unknown) and a probe answers from the QEMU process itself: \
running if one runs for the domain on this node, not running if none does."""

SPEC = AgentSpec(
    name="RBDVirtualDomain",
    shortdesc="Manages virtual domains on Ceph RBD, refusing a second writer",
    longdesc=LONGDESC,
    params=PARAMS,
    actions=ACTIONS,
)
