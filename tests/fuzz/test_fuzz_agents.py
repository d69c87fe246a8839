"""Property-based fuzzing of both agents as whole processes (hypothesis).

Each example is a resource configuration (a few parameters set to valid, hostile or random
values, bytes included) and an OCF environment (state directory, instance name, timeout,
log files, interval, depth), run twice in parallel: validate-all and one action. Properties:
the invariants of harness.problems for both runs (no traceback, no block, exit reason
last and alone, stop 0 when nothing runs) and the gate: when validate-all answers 0, the
action never answers 6.

Values name files of the fuzz world by placeholders ('@fifo', ...), resolved per run.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from harness import agent, agreement, in_parallel, problems
from vmceph.cephhealth import SPEC as HEALTH_SPEC
from vmceph.rbdvd_params import SPEC as RBD_SPEC

SCALE = float(os.environ.get("VMCEPH_FUZZ_SCALE", "1"))

# Valid values per parameter (what an administrator would write), so that many examples get
# past validation and reach the action.
VALID = {
    "config": ["@dom", "@dom", "@dom_running"],
    "hypervisor": ["test:///default"] * 3 + ["qemu:///system", "test+unix:///default"],
    "force_stop": ["true", "false", "1", "0", "yes", "no", "on", "off"],
    "migration_transport": ["", "ssh", "tcp", "tls"],
    "migration_user": ["", "root", "vmceph"],
    "migration_downtime": ["0", "300", "3600000"],
    "migration_speed": ["0", "1000"],
    "migration_network_suffix": ["", "-mig"],
    "migrateuri": ["", "tcp://%n-mig:49152"],
    "migrate_options": ["", "--unsafe", "--compressed --auto-converge", "--migrateuri tcp://x:1"],
    "monitor_scripts": ["", "@script_ok", "true"],
    "migrateport": ["1", "49152", "65535"],
    "remoteuri": ["", "qemu+tls://%n/system"],
    "snapshot": ["", "@snapdir", "@dir"],
    "shutdown_mode": ["", "acpi", "acpi,agent"],
    "ceph_conf": ["@ceph_conf"] * 3,
    "ceph_user": ["", "admin", "vmceph"],
    "ceph_keyring": ["", "@keyring"],
    "node_addresses": ["", "n1=10.0.0.1 n2=10.0.0.2,10.0.1.2"],
    "membership": ["", "n1=member n2=fenced"],
    "unknown_client_policy": ["refuse", "blocklist"],
    "blocklist_expire": ["60", "3600"],
    "health_attribute": ["#health-ceph"],
    "allow_ext_transport": ["false"],
    "attribute": ["#health-ceph", "#health-x"],
    "address_attribute": ["", "vmceph-ceph-addrs"],
    "pools": ["", "rbd", "rbd\tother"],
    "warn_color": ["green", "yellow", "red"],
    "err_color": ["yellow", "red"],
    "check_colors": ["", "OSD_DOWN=yellow MON_DOWN=green"],
    "dampen": ["5s", "0", "1min"],
    "ceph_timeout": ["1", "2"],
}

HOSTILE = [
    "", " ", "-1", "0", "1", "65536", str(2 ** 63), "9" * 400, "+5", "1_000",
    "\u0663\u0666\u0660\u0660", "\uff15", "true ", "Yes", "y", "maybe", "nan", "inf", "1e999",
    "relative/path", "@fifo", "@dir", "/dev/null", "@dangling", "@loop", "@enotdir",
    "@toolong", "@file", "@missing", "@ceph_binary", "@passwd", "@ceph_include",
    "@dom_baduuid", "@dom_newline", "@dom_malformed", "@dom_binary", "@dom_empty",
    "@script_fail", "@script_noexec", "./ok.sh",
    b"\xff\xfe", b"ok\xc3", b"qemu:///sys\xe9tem",
    "a\nocf-exit-reason:forged", "x\r\nocf-exit-reason:forged", "\x1b[31mred",
    "$(touch @marker)", "`touch @marker`", "; touch @marker", "|touch @marker",
    "qemu+ext:///system?command=/usr/bin/touch%20@marker",
    "test+ext:///default?command=/usr/bin/touch%20@marker",
    "%n", "%s%s%s%s", "{}", "\\", "'", '"',
    "x" * 100000,
    "#health-", "#health-a b", "client.admin",
]


def _values(names):
    valid = sorted({v for n in names for v in VALID.get(n, [])})
    return st.one_of(
        st.sampled_from(valid),
        st.sampled_from(HOSTILE),
        st.binary(max_size=16),
        st.text(max_size=16),
        st.integers(-2 ** 70, 2 ** 70).map(str),
    )


ENV_CHOICES = {
    "HA_RSCTMP": ["@rsctmp", "@rsctmp", "@file", "/dev/null", "@fifo", "", "relative",
                  "@toolong", "@missing", b"\xff"],
    "OCF_RESOURCE_INSTANCE": ["vm", "vm:0", "a/b/../c", "i" * 100000, b"\xff\xfe",
                              "n\nocf-exit-reason:forged", "", "."],
    "OCF_RESKEY_CRM_meta_timeout": ["3000", "1000", "1", "0", "-1", "abc", "9" * 400, "",
                                    "1e3", str(10 ** 12), " 3000", "\uff13\uff10\uff10\uff10",
                                    None],
    "HA_LOGFILE": ["@fifo", "@dir", "/dev/null", "@rsctmp/ha.log", "@toolong", "@enotdir",
                   "@loop"],
    "HA_DEBUGLOG": ["@fifo", "@rsctmp/debug.log", "/dev/null"],
    "HA_debug": ["1", "0", "yes"],
    "OCF_RESKEY_CRM_meta_interval": ["0", "10000", "abc", "", "-5", "9" * 400],
    "OCF_CHECK_LEVEL": ["0", "10", "20", "x", ""],
}

# actions that wait on Ceph or libvirt for their whole deadline: always a short, valid one
WAITING = {"start", "migrate_to", "migrate_from"}


def _resolve(world, value):
    if isinstance(value, bytes):
        return value.replace(b"@marker", world.marker.encode())
    if value.startswith("@") and hasattr(world, value[1:].split("/")[0]):
        head, _, rest = value[1:].partition("/")
        path = getattr(world, head)
        return path + ("/" + rest if rest else "")
    if value == "@missing":
        return world.root + "/missing"
    return value.replace("@marker", world.marker)


def build_env(world, agent_name, params, env_over, action, serial):
    e = dict(harness.BASE_ENV)
    rsctmp = os.path.join(world.rsctmp, "run%d" % serial)
    e.update({b"OCF_RESOURCE_INSTANCE": b"fz%d" % serial, b"HA_RSCTMP": rsctmp.encode(),
              b"OCF_RESKEY_ceph_conf": world.ceph_conf.encode(),
              b"OCF_RESKEY_CRM_meta_migrate_source": b"n1",
              b"OCF_RESKEY_CRM_meta_migrate_target": b"n2"})
    if agent_name == "RBDVirtualDomain":
        e[b"OCF_RESKEY_config"] = world.dom.encode()
        e[b"OCF_RESKEY_hypervisor"] = b"test:///default"
    for name, value in params.items():
        e[b"OCF_RESKEY_" + name.encode()] = harness.b(_resolve(world, value))
    for name, value in env_over.items():
        if value is None:
            e.pop(name.encode(), None)
        else:
            e[name.encode()] = harness.b(_resolve(world, value))
    recurring = env_over.get("OCF_RESKEY_CRM_meta_interval") not in (None, "0", "")
    if action in WAITING or (action in ("monitor", "status") and recurring) or \
            (agent_name == "CephHealth" and action == "start"):
        e[b"OCF_RESKEY_CRM_meta_timeout"] = b"2000"
    return e


def examples(agent_name, names, actions):
    return st.tuples(
        st.dictionaries(st.sampled_from(names), _values(names), max_size=4),
        st.dictionaries(st.sampled_from(sorted(ENV_CHOICES)),
                        st.sampled_from(sorted(ENV_CHOICES)).flatmap(
                            lambda k: st.sampled_from(ENV_CHOICES[k])), max_size=3),
        st.sampled_from(actions),
    )


_serial = [0]


def check_example(world, agent_name, example):
    params, env_over, action = example
    # a key drawn for one variable may have got another's value: keep only sensible pairs
    env_over = {k: v for k, v in env_over.items() if v in ENV_CHOICES[k]}
    _serial[0] += 1
    e = build_env(world, agent_name, params, env_over, action, _serial[0])
    ev = dict(e)
    # validate-all is asked with the same configuration and its own timeout
    ev[b"OCF_RESKEY_CRM_meta_timeout"] = e.get(b"OCF_RESKEY_CRM_meta_timeout", b"3000")
    v, r = in_parallel(lambda: agent(agent_name, "validate-all", ev),
                       lambda: agent(agent_name, action, e))
    found = ["validate-all: " + p for p in problems(v, "validate-all")]
    act = "stop" if action == "stop" else action
    found += ["%s: %s" % (action, p) for p in problems(r, act)]
    # at OCF_CHECK_LEVEL 0 validate-all checks the values only, not this node (OCF 1.1
    # "Check Levels"): it cannot be the gate for what the action finds here
    if action not in ("meta-data", "monitor", "status", "bogus") and \
            env_over.get("OCF_CHECK_LEVEL") != "0":
        found += agreement(v, action, r)
    assert not found, "%s\n--- validate-all: %s\n--- %s: %s" % (
        found, v.describe(), action, r.describe())


RBD_NAMES = [p.name for p in RBD_SPEC.params]
RBD_ACTIONS = ["stop", "stop", "stop", "monitor", "monitor", "status", "start",
               "migrate_to", "migrate_from", "reload", "meta-data", "bogus"]
HEALTH_NAMES = [p.name for p in HEALTH_SPEC.params]
HEALTH_ACTIONS = ["stop", "stop", "monitor", "monitor", "start", "reload", "meta-data"]

COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large])


def _n(count):
    return max(1, int(count * SCALE))


@settings(max_examples=_n(40), **COMMON)
@given(example=examples("RBDVirtualDomain", RBD_NAMES, RBD_ACTIONS))
def test_rbdvd_properties(world, example):
    check_example(world, "RBDVirtualDomain", example)


@settings(max_examples=_n(20), **COMMON)
@given(example=examples("CephHealth", HEALTH_NAMES, HEALTH_ACTIONS))
def test_cephhealth_properties(world, example):
    check_example(world, "CephHealth", example)


@pytest.mark.long
@settings(max_examples=_n(1000), **COMMON)
@given(example=examples("RBDVirtualDomain", RBD_NAMES, RBD_ACTIONS))
def test_rbdvd_properties_long(world, example):
    check_example(world, "RBDVirtualDomain", example)


@pytest.mark.long
@settings(max_examples=_n(400), **COMMON)
@given(example=examples("CephHealth", HEALTH_NAMES, HEALTH_ACTIONS))
def test_cephhealth_properties_long(world, example):
    check_example(world, "CephHealth", example)
