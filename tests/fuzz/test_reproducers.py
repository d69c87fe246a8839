"""Every reproducer of issue 16, as whole processes: the code it must now give, the reason
it must name, and the invariants of every run (harness.problems). Runs in ``make test``."""

import os

import pytest

import harness
from harness import agent, cli, problems

RBD, HEALTH = "RBDVirtualDomain", "CephHealth"
NOT_UTF8 = b"test:///def\xff\xfe"


def env(w, agent_name=RBD, instance="fz-repro", **kv):
    """The issue's `E` environment plus the case's parameters (OCF_RESKEY_ added to names
    in lower case) and raw variables (upper case)."""
    e = dict(harness.BASE_ENV)
    e.update({b"OCF_RESOURCE_INSTANCE": instance, b"HA_RSCTMP": w.rsctmp,
              b"OCF_RESKEY_ceph_conf": w.ceph_conf})
    if agent_name == RBD:
        e.update({b"OCF_RESKEY_config": w.dom, b"OCF_RESKEY_hypervisor": b"test:///default"})
    for k, v in kv.items():
        key = ("OCF_RESKEY_" + k) if k.islower() else k
        if v is None:
            e.pop(harness.b(key), None)
        else:
            e[harness.b(key)] = v
    return e


RECURRING = {"OCF_RESKEY_CRM_meta_interval": "10000"}
MIGRATE = {"OCF_RESKEY_CRM_meta_migrate_source": "n1", "OCF_RESKEY_CRM_meta_migrate_target": "n2"}

# (id, agent, action, parameters/variables (a function of the world), expected rc, reason)
CASES = [
    # 1. snapshot naming an existing non-directory: validate-all refuses it, stop works
    *[("snapshot-%s-%s" % (kind, action), RBD, action,
       (lambda w, kind=kind: {"snapshot": {"file": w.file, "devnull": "/dev/null",
                                           "fifo": w.fifo, "dangling": w.dangling}[kind]}),
       rc, "snapshot" if rc else None)
      for kind in ("file", "devnull", "fifo", "dangling")
      for action, rc in (("validate-all", 5), ("stop", 0))],
    ("snapshot-file-stop-running", RBD, "stop",
     lambda w: {"snapshot": w.file, "config": w.dom_running}, 0, None),
    # 2. a <uuid> libvirt refuses
    ("baduuid-validate", RBD, "validate-all", lambda w: {"config": w.dom_baduuid}, 6, "uuid"),
    ("baduuid-start", RBD, "start", lambda w: {"config": w.dom_baduuid}, 6, "uuid"),
    ("baduuid-probe", RBD, "monitor", lambda w: {"config": w.dom_baduuid}, 7, None),
    ("baduuid-monitor", RBD, "monitor", lambda w: dict(RECURRING, config=w.dom_baduuid), 6,
     "uuid"),
    ("baduuid-stop", RBD, "stop", lambda w: {"config": w.dom_baduuid}, 0, None),
    ("baduuid-migrate_from", RBD, "migrate_from",
     lambda w: dict(MIGRATE, config=w.dom_baduuid), 6, "uuid"),
    # 3. non-UTF-8 values
    *[("nonutf8-hypervisor-%s" % a, RBD, a, lambda w, a=a: dict(MIGRATE, hypervisor=NOT_UTF8),
       rc, "UTF-8" if rc == 6 else None)
      for a, rc in (("validate-all", 6), ("start", 6), ("stop", 0), ("monitor", 7),
                    ("migrate_to", 6), ("migrate_from", 6))],
    ("nonutf8-hypervisor-recurring", RBD, "monitor",
     lambda w: dict(RECURRING, hypervisor=NOT_UTF8), 6, "UTF-8"),
    ("nonutf8-ceph_user-rbd", RBD, "validate-all", lambda w: {"ceph_user": b"\xff"}, 6,
     "ceph_user"),
    ("nonutf8-ceph_user-rbd-stop", RBD, "stop", lambda w: {"ceph_user": b"\xff"}, 0, None),
    ("nonutf8-ceph_user-health", HEALTH, "validate-all", lambda w: {"ceph_user": b"\xff"}, 6,
     "ceph_user"),
    ("nonutf8-ceph_user-health-stop", HEALTH, "stop", lambda w: {"ceph_user": b"\xff"}, 0,
     None),
    # 4. HA_RSCTMP a non-directory, a 100 KB instance name
    *[("rsctmp-%s-%s-%s" % (kind, ag, a), ag, a,
       (lambda w, kind=kind: {"HA_RSCTMP": w.file if kind == "file" else "/dev/null"}), 0, None)
      for kind in ("file", "devnull") for ag in (RBD, HEALTH) for a in ("stop",)],
    ("rsctmp-file-validate", RBD, "validate-all", lambda w: {"HA_RSCTMP": w.file}, 0, None),
    *[("huge-instance-%s-%s" % (ag, a), ag, a,
       lambda w: {"OCF_RESOURCE_INSTANCE": "i" * 100000}, rc, None)
      for ag in (RBD, HEALTH) for a, rc in (("stop", 0), ("monitor", 7))],
    # 5. a 400-digit timeout: never an OverflowError, every action answers
    *[("timeout-400-digits-%s-%s" % (ag, a), ag, a,
       lambda w: {"OCF_RESKEY_CRM_meta_timeout": "9" * 400}, rc, None)
      for ag in (RBD, HEALTH)
      for a, rc in (("stop", 0), ("validate-all", 0), ("monitor", 7), ("meta-data", 0))],
    # blocks: a log file that is a FIFO
    *[("logfile-fifo-%s-%s" % (ag, a), ag, a, lambda w: {"HA_LOGFILE": w.fifo}, rc, None)
      for ag in (RBD, HEALTH) for a, rc in (("stop", 0), ("validate-all", 0))],
    ("debuglog-fifo", RBD, "stop", lambda w: {"HA_DEBUGLOG": w.fifo, "HA_debug": "1"}, 0, None),
    # forged exit reasons
    ("newline-in-value", RBD, "validate-all",
     lambda w: {"migration_user": "x\nocf-exit-reason:all good"}, 6, "control character"),
    ("newline-in-domain-name-stop", RBD, "stop", lambda w: {"config": w.dom_newline}, 0, None),
    ("newline-in-domain-name-probe", RBD, "monitor", lambda w: {"config": w.dom_newline}, 7,
     None),
    # validate-all says yes to what fails later, or with the wrong code
    *[("cephconf-%s-%s" % (kind, ag), ag, "validate-all",
       (lambda w, kind=kind: {"ceph_conf": getattr(w, kind)}), 6, "ceph_conf")
      for kind in ("ceph_binary", "passwd", "ceph_include") for ag in (RBD, HEALTH)],
    *[("cephconf-%s-start-%s" % (kind, ag), ag, "start",
       (lambda w, kind=kind: {"ceph_conf": getattr(w, kind)}), 6, "ceph_conf")
      for kind in ("ceph_binary", "passwd") for ag in (RBD, HEALTH)],
    *[("migrateport-%s" % v, RBD, "validate-all", (lambda w, v=v: {"migrateport": v}), 6,
       "migrateport") for v in ("65536", str(2 ** 63), "0", "-1")],
    ("migrateport-ok", RBD, "validate-all", lambda w: {"migrateport": "49152"}, 0, None),
    *[("health-relative-%s" % p, HEALTH, "validate-all", (lambda w, p=p: {p: "etc/ceph/x"}),
       6, p) for p in ("ceph_conf", "ceph_keyring")],
    ("monitor_scripts-missing", RBD, "validate-all",
     lambda w: {"monitor_scripts": w.root + "/nothere.sh"}, 5, "monitor_scripts"),
    ("monitor_scripts-relative", RBD, "validate-all",
     lambda w: {"monitor_scripts": "./ok.sh"}, 6, "monitor_scripts"),
    ("monitor_scripts-noexec", RBD, "validate-all",
     lambda w: {"monitor_scripts": w.script_noexec}, 5, "not executable"),
    ("monitor_scripts-ok", RBD, "validate-all", lambda w: {"monitor_scripts": w.script_ok}, 0,
     None),
    ("health-attribute-prefix", HEALTH, "validate-all", lambda w: {"attribute": "ceph"}, 6,
     "#health-"),
    *[("integer-%s" % v.encode("unicode_escape").decode(), RBD, "validate-all",
       (lambda w, v=v: {"migration_speed": v}), 6, "migration_speed")
      for v in ("1_000", "\u0663\u0666\u0660\u0660", "\uff15", "+5", " 5", "5 ", "0x10")],
    *[("integer-health-%s" % v, HEALTH, "validate-all", (lambda w, v=v: {"ceph_timeout": v}),
       6, "ceph_timeout") for v in ("1_0", "+5", "0", "99999999999999999999")],
    *[("boolean-%r" % v, RBD, "validate-all", (lambda w, v=v: {"force_stop": v}), 6,
       "force_stop") for v in ("true ", "Yes", "y", "On", "2")],
    *[("config-%s" % kind, RBD, "validate-all",
       (lambda w, kind=kind: {"config": getattr(w, kind)}), rc, words)
      for kind, rc, words in (("fifo", 5, "FIFO"), ("dir", 5, "directory"),
                              ("dangling", 5, "dangling"), ("loop", 5, "symbolic links"),
                              ("enotdir", 5, "Not a directory"), ("toolong", 6, "too long"),
                              # a damaged file is this node's problem (issue 13):
                              # OCF_ERR_INSTALLED, and the reason says so
                              ("dom_malformed", 5, "on this node"),
                              ("dom_binary", 5, "on this node"))],
    ("malformed-xml-recurring-monitor", RBD, "monitor",
     lambda w: dict(RECURRING, config=w.dom_malformed), 5, "on this node"),
    ("malformed-xml-probe", RBD, "monitor", lambda w: {"config": w.dom_malformed}, 7, None),
    ("interval-unparsable", RBD, "monitor",
     lambda w: {"OCF_RESKEY_CRM_meta_interval": "ten"}, 6, "CRM_meta_interval"),
    ("check-level-unparsable", RBD, "monitor",
     lambda w: dict(RECURRING, OCF_CHECK_LEVEL="deep"), 6, "OCF_CHECK_LEVEL"),
    # the ext transport
    ("ext-validate", RBD, "validate-all",
     lambda w: {"hypervisor": "test+ext:///default?command=/usr/bin/touch%20" + w.marker}, 6,
     "allow_ext_transport"),
    ("ext-stop", RBD, "stop",
     lambda w: {"hypervisor": "test+ext:///default?command=/usr/bin/touch%20" + w.marker}, 0,
     None),
    ("ext-probe", RBD, "monitor",
     lambda w: {"hypervisor": "test+ext:///default?command=/usr/bin/touch%20" + w.marker}, 7,
     None),
    # the monitor checks the URI it connects to, not the migration's
    ("remoteuri-ext-recurring-monitor", RBD, "monitor",
     lambda w: dict(RECURRING, remoteuri="qemu+ext://%n/system?command=/bin/true"), 7, None),
    ("remoteuri-ext-stop-running", RBD, "stop",
     lambda w: {"remoteuri": "qemu+ext://%n/system?command=/bin/true",
                "config": w.dom_running}, 0, None),
    ("remoteuri-ext", RBD, "validate-all",
     lambda w: {"remoteuri": "qemu+ext://%n/system?command=/bin/true"}, 6, "remoteuri"),
    ("ext-allowed-parses", RBD, "validate-all",
     lambda w: {"remoteuri": "qemu+ext://%n/system?command=/bin/true",
                "allow_ext_transport": "true"}, 0, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_reproducer(world, case):
    _id, name, action, params, rc, words = case
    r = agent(name, action, env(world, name, **params(world)))
    assert problems(r, action) == [], r.describe()
    assert r.rc == rc, r.describe()
    if words:
        assert words in r.reasons[-1], r.describe()


@pytest.mark.parametrize("name", [RBD, HEALTH])
@pytest.mark.parametrize("action,close,rc", [("meta-data", (1,), 0), ("stop", (2,), 0),
                                             ("stop", (0, 1, 2), 0),
                                             ("validate-all", (1, 2), 0)])
def test_closed_standard_streams(world, name, action, close, rc):
    r = agent(name, action, env(world, name), close=close)
    assert not r.blocked and r.rc == rc, r.describe()


def test_long_log_lines_are_not_cut_after_librados(world):
    """librados makes stderr non-blocking; a 100 KB line must still arrive whole, with the
    exit reason after it on its own line."""
    long_value = "v" * 100000
    r = agent(RBD, "validate-all", env(world, migrate_options="--bogus" + long_value,
                                       HA_debug="1"))
    assert problems(r, "validate-all") == [], r.describe()
    assert r.rc == 6 and r.err_lines[-1].startswith("ocf-exit-reason:")


@pytest.mark.parametrize("args,rc", [
    (lambda w: ["check", w.dom, "--ceph-conf", w.fifo], 2),
    (lambda w: ["check", w.dom, "--ceph-conf", w.ceph_conf, "--ceph-keyring", w.fifo], 2),
    (lambda w: ["disks", w.fifo], 2),
    (lambda w: ["disks", w.toolong], 2),
    (lambda w: ["disks", w.loop], 2),
    (lambda w: ["disks", w.enotdir], 2),
    (lambda w: ["check", "--image", "rbd/x", "--ceph-user", b"\xff\xfe"], 2),
    (lambda w: ["check", "--image", "rbd/x", "--ceph-conf", b"/etc/\xff.conf"], 2),
    *[(lambda w, t=t: ["check", w.dom, "--timeout", t], 2)
      for t in ("-1", "0", "nan", "inf", "-inf", "1e999")],
    (lambda w: ["disks", w.dom], 0),
])
def test_cli_reproducer(world, args, rc):
    r = cli(args(world))
    assert harness.cli_problems(r) == [], r.describe()
    assert r.rc == rc, r.describe()


def test_stop_of_a_running_domain_despite_every_bad_parameter(world):
    """When the domain runs, configuration problems never keep stop from stopping it."""
    r = agent(RBD, "stop", env(world, config=world.dom_running, snapshot=world.fifo,
                               force_stop="maybe", shutdown_mode="bogus",
                               migrateport="70000", ceph_conf=world.fifo,
                               monitor_scripts="./x", HA_RSCTMP=world.file,
                               HA_LOGFILE=world.fifo))
    assert problems(r, "stop") == [], r.describe()
    assert b"shut down" in r.err or b"destroying domain test" in r.err, r.describe()
    assert not os.path.exists(world.marker)
