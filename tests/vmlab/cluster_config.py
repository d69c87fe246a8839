"""Configure a lab's Pacemaker cluster FROM cib-examples/, the way an administrator would:

    pcs cluster cib work.xml               (inside node 1, a copy of the live CIB)
    CIB=work.xml cib-examples/pcs.sh       (the example, unchanged, from the checkout)
    sh adapt.sh                            (the lab adaptations below, each with its reason)
    crm_verify -x work.xml
    pcs cluster cib-push work.xml --config

so the end-to-end tests and the demo exercise the very configuration the project ships.
Needs a lab with Pacemaker and the example's node names: Lab(nodes=3, pacemaker=True,
node_prefix="node"). Everything it writes is under the lab's state dir: cib/ (work.xml,
pcs.log, adapt.sh, pushed.xml) and vms/ (the domain XML of each VM), plus cluster.json.

The adaptations (ADAPTATIONS below; adapt.sh carries the same reasons as comments):
- fencing: the lab has no BMCs and no PDU. The example's fence_ipmilan devices, its
  fence_apc_snmp PDU, its two-level topology and the lab's own bootstrap device
  (fence-vmlab) are replaced by one fence_vmlab device per node, shaped like the example's
  level 1 (pcmk_host_list=nodeN, static-list, never on the node it fences,
  allow-unhealthy-nodes=true), alone in level 1;
- each VM's config points at a domain XML the lab writes (lab.make_domain_xml) under the
  state dir, a path every node sees (the example's /etc/vmceph/domains is per node; the
  lab's nodes would each need a copy). Never /etc/libvirt/qemu: libvirtd loads the XML
  files there as persistent definitions (cib-examples/README.md);
- force_stop=true: the lab's guests have no operating system and ignore the ACPI shutdown
  request, so every stop would wait 2/3 of the 90 s stop timeout before destroying;
- ceph_keyring is NOT added: librados finds /etc/ceph/ceph.client.vmceph.keyring through
  its default keyring search path (/etc/ceph/$cluster.$name.keyring);
- the RBD images are created, and client.vmceph gets the caps cib-examples/README.md asks
  for, 'profile rbd' only: CephHealth's PG check (pools=rbd) reads the monitors'
  PG_AVAILABILITY since issue 13 (it used the mgr command `pg ls-by-pool`, which `profile
  rbd` does not allow, and needed mgr 'profile rbd pool=rbd, allow command "pg ls-by-pool"').
"""

import copy as copy_module
import json
import os
import re
import shlex
import time
import xml.etree.ElementTree as ET

from .util import LabError, wait_until, write_file

NODE_NAMES = ("node1", "node2", "node3")
# disks per VM; the names are the example's (pcs.sh creates vm1, vm2, vm3)
DEFAULT_VMS = {"vm1": 2, "vm2": 1, "vm3": 1}
IMAGE_MB = 64
MGR_CAPS = "profile rbd pool={pool}"


class ClusterConfig:
    """What configure() set up: {vm: [images]}, {vm: domain XML path}, the CIB work dir."""

    def __init__(self, vms, configs, cib_dir, timings=None, in_ceph=None):
        self.vms = vms
        self.configs = configs
        self.cib_dir = cib_dir
        self.timings = timings or {}
        self.in_ceph = in_ceph or {}   # {vm: ceph:POOL/VM} of the VMs defined in Ceph

    def config_param(self, vm):
        """The resource's config: the definition in Ceph, else the XML file."""
        return self.in_ceph.get(vm) or self.configs[vm]

    def to_json(self):
        return {"vms": self.vms, "configs": self.configs, "cib_dir": self.cib_dir,
                "timings": self.timings, "in_ceph": self.in_ceph}

    @classmethod
    def load(cls, lab):
        path = lab.path("cluster.json")
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            raise LabError(f"lab {lab.name} is not configured ({path} missing): run "
                           "`python3 -m vmlab configure`") from None
        return cls(doc["vms"], doc["configs"], doc["cib_dir"], doc.get("timings"),
                   doc.get("in_ceph"))

    @property
    def images(self):
        return [img for imgs in self.vms.values() for img in imgs]


def adaptations(lab, cfg):
    """[(reason, [shell command, ...])] applied to the CIB file after pcs.sh."""
    p = 'pcs -f "$CIB"'
    q = shlex.quote
    steps = [
        ("The lab has no BMCs and no PDU: remove the example's IPMI devices (pcs also removes "
         "their location constraints), its PDU, and the lab's bootstrap device fence-vmlab.",
         [f"{p} stonith delete fence-ipmi-{n}" for n in NODE_NAMES]
         + [f"{p} stonith delete fence-pdu", f"{p} stonith delete fence-vmlab"]),
        ("The example's fence_vmceph device (fence-ceph, level 1, provides=unfencing) needs "
         "the Ceph user 'fence', which the lab does not have at this point: without it "
         "unfencing fails and nothing starts. Removed; tests/e2e/test_fence_vmceph_e2e.py "
         "sets up its own.",
         [f"{p} stonith delete fence-ceph"]),
        ("The example's topology (IPMI at level 1, PDU at level 2) names removed devices.",
         [f"{p} stonith level clear"]),
    ]
    fence = []
    for n in NODE_NAMES:
        dev = f"fence-vmlab-{n}"
        fence += [f"{p} stonith create {dev} fence_vmlab state_dir={q(lab.state_dir)} "
                  f"pcmk_host_list={n} pcmk_host_check=static-list op monitor interval=60s "
                  f"meta allow-unhealthy-nodes=true",
                  f"{p} constraint location {dev} avoids {n}",
                  f"{p} stonith level add 1 {n} {dev}"]
    steps.append(("One fence_vmlab device per node in place of its IPMI device, shaped like "
                  "the example's level 1: it kills every process of the node's network "
                  "namespace (a power-off), never runs on its own victim, and keeps working "
                  "on a node whose #health-ceph is red.", fence))
    steps.append(("Each VM runs the domain XML the lab wrote, at a path every node sees (not "
                  "/etc/libvirt/qemu, whose files libvirtd would load as persistent "
                  "definitions); force_stop=true because the lab's guests have no OS and "
                  "ignore ACPI shutdown (each stop would wait 60 s before destroying). "
                  "ceph_keyring is not needed: librados finds "
                  "/etc/ceph/ceph.client.vmceph.keyring on its default search path.",
                  [f"{p} resource update {vm} config={q(cfg.config_param(vm))} force_stop=true"
                   for vm in cfg.configs]))
    remote = []
    for n in remote_names(lab):
        dev = f"fence-vmlab-{n}"
        remote += [f"{p} stonith create {dev} fence_vmlab state_dir={q(lab.state_dir)} "
                   f"pcmk_host_list={n} pcmk_host_check=static-list op monitor interval=60s "
                   f"meta allow-unhealthy-nodes=true",
                   f"{p} stonith level add 1 {n} {dev}",
                   f'CIB_file="$CIB" cibadmin --modify --allow-create -o nodes -X '
                   f'{q(remote_node_xml(n))}']
    if remote:
        steps.append(("The lab's compute-only pacemaker_remote nodes (vmlab up --remotes N; "
                      "their connection resources came with the lab's CIB): each gets its "
                      "own fence_vmlab device at level 1 (a fence device never runs on a "
                      "remote node, so no avoids constraint is needed) and the example's "
                      "node capacity, without which placement-strategy=balanced puts no VM "
                      "there. CephHealth's clone runs there as on every node. The capacity "
                      "goes in with cibadmin: pcs 0.11.5 (-f) refuses 'node utilization' for "
                      "a remote node the CIB's <nodes> does not list yet ('Unable to find a "
                      "node'); the <node type=\"remote\"> is what Pacemaker itself writes "
                      "there.", remote))
    return steps


def add_preferences(cib_file, prefer):
    """The test's initial placement (configure(prefer=...)): each VM prefers its node with
    INFINITY, still only a preference (the VM runs elsewhere when that node is down);
    release_preferences removes them. Written into the CIB file directly, as pcs
    'constraint location VM prefers NODE=INFINITY' would (same ids): one pcs call per VM
    costs ~1-2 s on the loaded lab machine."""
    tree = ET.parse(cib_file)
    constraints = tree.getroot().find("configuration/constraints")
    for vm, node in sorted(prefer.items()):
        ET.SubElement(constraints, "rsc_location", {"id": _preference_id(vm, node),
                                                    "rsc": vm, "node": node,
                                                    "score": "INFINITY"})
    tree.write(cib_file)


def _preference_id(vm, node):
    return f"location-{vm}-{node}-INFINITY"


def release_preferences(lab, prefer, node=None):
    """Remove the constraints configure(prefer=...) added (pcs names them
    location-VM-NODE-INFINITY), all in one CIB change; the VMs stay where they run
    (resource-stickiness)."""
    ids = [_preference_id(vm, n) for vm, n in sorted(prefer.items())]
    lab.run(node or lab.first_alive(), ["pcs", "constraint", "delete", *ids], timeout=60)


def add_vm_copies(cib_file, names, template="vm2"):
    """VMs beyond the example's three (configure(vms=...) with more names): each a copy of
    the example's ``template`` resource as pcs.sh wrote it into the CIB file, with its
    constraints (order after CephHealth, avoid red, prefer green), every id and the config
    path renamed. Copying what pcs.sh wrote keeps every VM of a large lab exactly the
    example's, whatever pcs.sh's vm() function says today. Returns the names added."""
    tree = ET.parse(cib_file)
    conf = tree.getroot().find("configuration")
    resources, constraints = conf.find("resources"), conf.find("constraints")
    have = {p.get("id") for p in resources.iter("primitive")}
    prim = next((p for p in resources.iter("primitive") if p.get("id") == template), None)
    if prim is None:
        raise LabError(f"cib-examples/pcs.sh no longer creates {template}: the lab's extra "
                       f"VMs are copies of it")
    word = re.compile(r"\b%s\b" % re.escape(template))
    cons = [c for c in constraints
            if template in (c.get("rsc"), c.get("first"), c.get("then"))]
    added = []
    for name in names:
        if name in have:
            continue
        for src, parent in [(prim, resources)] + [(c, constraints) for c in cons]:
            copy = copy_module.deepcopy(src)
            for el in copy.iter():
                for key in ("id", "rsc", "first", "then"):
                    if el.get(key):
                        el.set(key, word.sub(name, el.get(key)))
                if el.get("name") == "config":
                    el.set("value", word.sub(name, el.get("value")))
            parent.append(copy)
        added.append(name)
    tree.write(cib_file)
    return added


def remote_node_xml(name):
    """A remote node's entry in the CIB's <nodes> with the example's capacity (pcs.sh:
    cpu=28 hv_memory=196608 per node)."""
    u = f"nodes-{name}-utilization"
    return (f'<node id="{name}" uname="{name}" type="remote"><utilization id="{u}">'
            f'<nvpair id="{u}-cpu" name="cpu" value="28"/>'
            f'<nvpair id="{u}-hv_memory" name="hv_memory" value="196608"/>'
            f'</utilization></node>')


def remote_names(lab):
    return [lab.node_name(i) for i in getattr(lab, "remote_indexes", ())]


def adapt_script(lab, cfg):
    lines = ["#!/bin/sh",
             "# Lab adaptations of cib-examples/pcs.sh (tests/vmlab/cluster_config.py)",
             "set -eu", 'CIB=${CIB:?}', ""]
    for reason, commands in adaptations(lab, cfg):
        words, line = reason.split(), "#"
        for w in words:
            if len(line) + len(w) > 90:
                lines.append(line)
                line = "#"
            line += " " + w
        lines.append(line)
        lines += commands + [""]
    return "\n".join(lines) + "\n"


def check_lab(lab):
    if not lab.pacemaker:
        raise LabError("configure needs a lab with Pacemaker (up --pacemaker)")
    names = tuple(lab.node_name(i) for i in lab.indexes)
    if names != NODE_NAMES:
        raise LabError(f"cib-examples/pcs.sh is written for nodes {', '.join(NODE_NAMES)}; "
                       f"this lab has {', '.join(names)} (up --nodes 3 --node-prefix node)")


def configure(lab, vms=None, wait=True, timeout=300, ceph_defined=(), prefer=None):
    """Apply cib-examples/pcs.sh plus the lab adaptations to the lab's live cluster.
    Returns the ClusterConfig; with wait, returns once every VM runs and every node's
    #health-ceph is green. The VMs named in ``ceph_defined`` get their definition stored
    in Ceph (`vmceph config put`, docs/definitions.md) and config=ceph:POOL/VM; their XML
    file is still written (vmceph check and the scenarios' `virsh create` read it), the
    agent never reads it. VMs beyond the example's vm1..vm3 are copies of its vm2
    (add_vm_copies); ``prefer`` {vm: node} places them first (release_preferences)."""
    check_lab(lab)
    log, t_all = lab.log, time.monotonic()
    timings = {}
    vms = vms or DEFAULT_VMS
    images = {vm: [f"{vm}-disk{k}" for k in range(n)] for vm, n in vms.items()}
    cib_dir, vm_dir = lab.path("cib"), lab.path("vms")
    os.makedirs(cib_dir, exist_ok=True)
    configs = {}
    for vm, imgs in images.items():
        configs[vm] = os.path.join(vm_dir, f"{vm}.xml")
        write_file(configs[vm], lab.make_domain_xml(vm, imgs))
    cfg = ClusterConfig(images, configs, cib_dir)

    t0 = time.monotonic()
    caps = MGR_CAPS.format(pool=lab.pool)
    lab.ceph(1, "auth", "caps", f"client.{lab.ceph_user}", "mon", "profile rbd",
             "osd", f"profile rbd pool={lab.pool}", "mgr", caps)
    create = " && ".join(
        f"{{ rbd info {lab.pool}/{img} >/dev/null 2>&1 || "
        f"rbd create {lab.pool}/{img} --size {IMAGE_MB}M; }}" for img in cfg.images)
    lab.run(1, ["sh", "-c", create], timeout=120)
    lib = os.path.join(lab.project_root, "lib")
    for vm in ceph_defined:
        lab.run(1, ["/usr/bin/python3", "-m", "vmceph", "config", "put",
                    f"ceph:{lab.pool}/{vm}", configs[vm], "-m", "lab configure"],
                env={"PYTHONPATH": lib}, timeout=90)
        cfg.in_ceph[vm] = f"ceph:{lab.pool}/{vm}"
    timings["images_caps_s"] = round(time.monotonic() - t0, 1)
    log(f"configure: {len(cfg.images)} RBD images, domain XML in {vm_dir}, mgr caps "
        f"'{caps}' ({timings['images_caps_s']}s)")

    work = os.path.join(cib_dir, "work.xml")
    pcs_sh = os.path.join(lab.project_root, "cib-examples", "pcs.sh")
    t0 = time.monotonic()
    lab.run(1, ["pcs", "cluster", "cib", work], timeout=60)
    out = lab.run(1, ["sh", "-c", f"CIB={shlex.quote(work)} {shlex.quote(pcs_sh)} 2>&1"],
                  timeout=600)
    write_file(os.path.join(cib_dir, "pcs.log"), out.stdout)
    timings["pcs_sh_s"] = round(time.monotonic() - t0, 1)
    log(f"configure: cib-examples/pcs.sh applied to {work} ({timings['pcs_sh_s']}s)")
    extra = add_vm_copies(work, list(images))
    if extra:
        log(f"configure: {', '.join(extra)} added as copies of the example's vm2")
    if prefer:
        add_preferences(work, prefer)

    t0 = time.monotonic()
    script = os.path.join(cib_dir, "adapt.sh")
    write_file(script, adapt_script(lab, cfg), 0o755)
    out = lab.run(1, ["sh", "-c", f"CIB={shlex.quote(work)} sh {shlex.quote(script)} 2>&1"],
                  timeout=600)
    write_file(os.path.join(cib_dir, "adapt.log"), out.stdout)
    verify = lab.run(1, ["crm_verify", "-x", work, "-V"], timeout=60, check=False)
    write_file(os.path.join(cib_dir, "crm_verify.log"), verify.stdout + verify.stderr)
    # 78 = warnings only: here the lab's bootstrap fence device, still running, is an
    # orphan of the new configuration (it is stopped once the configuration is pushed)
    if verify.returncode not in (0, 78) or "error" in (verify.stdout + verify.stderr).lower():
        raise LabError(f"crm_verify refused the adapted CIB:\n{verify.stdout}{verify.stderr}")
    timings["adapt_s"] = round(time.monotonic() - t0, 1)
    log(f"configure: lab adaptations ({script}), crm_verify ok ({timings['adapt_s']}s)")

    t0 = time.monotonic()
    lab.run(1, ["cp", work, os.path.join(cib_dir, "pushed.xml")], timeout=30)
    lab.run(1, ["pcs", "cluster", "cib-push", work, "--config"], timeout=120)
    write_file(lab.path("cluster.json"), json.dumps(cfg.to_json(), indent=2) + "\n")
    log("configure: pushed (pcs cluster cib-push --config)")
    if wait:
        wait_settled(lab, cfg, timeout=timeout)
        timings["settle_s"] = round(time.monotonic() - t0, 1)
        log(f"configure: every VM started, #health-ceph green on every node "
            f"({timings['settle_s']}s)")
    timings["total_s"] = round(time.monotonic() - t_all, 1)
    cfg.timings = timings
    write_file(lab.path("cluster.json"), json.dumps(cfg.to_json(), indent=2) + "\n")
    return cfg


# ---------------------------------------------------------------------- looking at it
def crm_mon_xml(lab, node=None):
    i = node or lab.first_alive()
    return ET.fromstring(lab.run(i, ["crm_mon", "-1", "--output-as=xml"], timeout=30).stdout)


def placement(lab, node=None, root=None):
    """{resource id: [nodes it is active on]} (clone instances under the clone's id)."""
    root = root if root is not None else crm_mon_xml(lab, node)
    where = {}
    for res in root.iter("resource"):
        if res.get("active") == "true":
            where.setdefault(res.get("id"), []).extend(n.get("name") for n in res.iter("node"))
    return where


def attrd_values(lab, name="#health-ceph", node=None):
    """{node: value} of a node attribute as attrd holds it right now. With a dampening, a
    change shows here at once and reaches the CIB (what Pacemaker acts on) only later."""
    i = node or lab.first_alive()
    out = lab.run(i, ["attrd_updater", "-n", name, "-QA"], timeout=20, check=False).stdout
    values = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        # a deleted value stays in attrd as value="" until the attribute is purged
        if "host" in fields and fields.get("value", '""').strip('"'):
            values[fields["host"].strip('"')] = fields["value"].strip('"')
    return values


def transient(lab, name="#health-ceph", node=None):
    """{node: value} of a transient node attribute as written in the CIB's status section:
    what the scheduler sees (crm_mon hides names starting with '#')."""
    i = node or lab.first_alive()
    root = ET.fromstring(lab.run(i, ["cibadmin", "-Q", "-o", "status"], timeout=30).stdout)
    values = {}
    for state in root.iter("node_state"):
        for nv in state.iterfind("transient_attributes/instance_attributes/nvpair"):
            if nv.get("name") == name:
                values[state.get("uname")] = nv.get("value")
    return values


def health(lab, node=None):
    """{node: #health-ceph} as written in the CIB (what node-health-strategy acts on)."""
    return transient(lab, "#health-ceph", node)


def node_attributes(lab, node=None, root=None):
    """{node: {name: value}} as crm_mon shows them (permanent and transient attributes of
    online nodes; names starting with '#' are hidden by crm_mon: see health())."""
    root = root if root is not None else crm_mon_xml(lab, node)
    return {n.get("name"): {a.get("name"): a.get("value") for a in n.iter("attribute")}
            for n in root.iterfind("node_attributes/node")}


def wait_settled(lab, cfg, timeout=120, node=None):
    """Every VM active on exactly one node, the fence devices started, every live node's
    #health-ceph green."""
    def settled():
        where = placement(lab, node)
        if any(len(where.get(vm, [])) != 1 for vm in cfg.vms):
            return False
        devices = [f"fence-vmlab-{n}" for n in NODE_NAMES + tuple(remote_names(lab))]
        if any(not where.get(dev) for dev in devices):
            return False
        alive = [lab.node_name(i) for i in getattr(lab, "all_indexes", lab.indexes)
                 if lab.alive(i)]
        colors = health(lab, node)
        return all(colors.get(n) == "green" for n in alive) and where
    result = wait_until(settled, timeout=timeout, interval=0.5,
                        what="VMs started and Ceph health green everywhere")
    # and no action still running: crm_mon lists a start as soon as it begins, and an
    # action in flight holds back the cluster's reaction to anything that happens meanwhile
    # (a node failing during a VM start is fenced only once that start has finished)
    lab.run(node or lab.first_alive(), ["crm_resource", "--wait", "-T", f"{int(timeout)}s"],
            timeout=timeout + 30)
    return result


def status(lab):
    """VM placement and node attributes, for `vmlab status` of a configured lab."""
    cfg = ClusterConfig.load(lab)
    where = placement(lab)
    colors = health(lab)
    addrs = {n: a.get("vmceph-ceph-addrs") for n, a in node_attributes(lab).items()}
    lines = ["  cluster (from cib-examples/pcs.sh):"]
    for vm in cfg.vms:
        lines.append(f"    {vm}: {', '.join(where.get(vm, [])) or 'stopped'} "
                     f"(images {', '.join(cfg.vms[vm])})")
    for n in NODE_NAMES + tuple(remote_names(lab)):
        lines.append(f"    {n}: #health-ceph={colors.get(n, '-')} "
                     f"vmceph-ceph-addrs={addrs.get(n) or '-'}")
    return "\n".join(lines)
