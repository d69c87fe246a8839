"""OCF conventions of the dispatcher (issue 13), each from its source:
- extra arguments: "the RA shall ignore all other arguments" (OCF RA API, Execution syntax);
- OCF_EXIT_REASON_PREFIX: the cookie ocf-shellfuncs' ocf_exit_reason prints, which
  crm_resource sets (seen: OCF_EXIT_REASON_PREFIX=ocf-exit-reason: in the agent's
  environment under `crm_resource --validate`);
- OCF_TRACE_RA / trace_ra / OCF_TRACE_FILE / trace_dir: ocf-shellfuncs' ocf_start_trace and
  ocf_default_trace_dest (resource-agents 4.12), what `crm resource trace` relies on;
- validate-all and OCF_CHECK_LEVEL: OCF 1.1 "Check Levels": at 0, the parameters' syntax
  and consistency only, "not ... the local environment in any fashion"; 10 may add it
  (`crm_resource --validate=0` sets OCF_CHECK_LEVEL=0, seen with an agent printing its
  environment).
"""

import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from vmceph import ocf, trace
from vmceph.cephhealth import CephHealth
from vmceph.rbdvd import RBDVirtualDomain

ROOT = Path(__file__).resolve().parents[2]


def _run(agent, argv, env):
    out, err = io.StringIO(), io.StringIO()
    rc = ocf.run(agent, argv, env, out, err)
    return rc, out.getvalue(), err.getvalue()


def _absent_env(tmp_path, **extra):
    """A configuration whose values are right but whose files do not exist here."""
    env = {"OCF_RESKEY_config": str(tmp_path / "nowhere" / "vm1.xml"),
           "OCF_RESKEY_ceph_conf": str(tmp_path / "nowhere" / "ceph.conf"),
           "OCF_RESKEY_CRM_meta_timeout": "10000", "OCF_RESOURCE_INSTANCE": "vm1"}
    env.update(extra)
    return env


# --------------------------------------------------------------------- extra arguments

@pytest.mark.parametrize("argv", [["RBDVirtualDomain", "meta-data", "extra"],
                                  ["RBDVirtualDomain", "validate-all", "x", "y"]])
def test_extra_arguments_are_ignored(tmp_path, argv):
    rc, out, err = _run(RBDVirtualDomain(), argv, _absent_env(tmp_path, OCF_CHECK_LEVEL="0"))
    assert rc == ocf.OCF_SUCCESS, err
    if argv[1] == "meta-data":
        assert "<resource-agent" in out


def test_no_action_at_all_is_still_an_argument_error():
    rc, _out, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain"], {})
    assert rc == ocf.OCF_ERR_ARGS
    assert err.startswith("usage: RBDVirtualDomain {")


# --------------------------------------------------------------- OCF_EXIT_REASON_PREFIX

def test_exit_reason_prefix_is_honoured(tmp_path):
    env = _absent_env(tmp_path, OCF_EXIT_REASON_PREFIX="my-cookie:")
    rc, _out, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "validate-all"], env)
    assert rc == ocf.OCF_ERR_INSTALLED
    last = err.splitlines()[-1]
    assert last.startswith("my-cookie:parameter config=")
    assert "ocf-exit-reason:" not in err


def test_exit_reason_prefix_defaults_and_cannot_split_the_line():
    assert ocf.exit_reason_prefix({}) == "ocf-exit-reason:"
    assert ocf.exit_reason_prefix({"OCF_EXIT_REASON_PREFIX": ""}) == "ocf-exit-reason:"
    assert "\n" not in ocf.exit_reason_prefix({"OCF_EXIT_REASON_PREFIX": "a\nb:"})


# ------------------------------------------------------------------------------ tracing

@pytest.mark.parametrize("env,want", [
    ({"OCF_TRACE_RA": "1"}, True), ({"OCF_TRACE_RA": "yes"}, True),
    ({"OCF_RESKEY_trace_ra": "1"}, True), ({"OCF_RESKEY_trace_ra": "true"}, True),
    ({"OCF_TRACE_RA": "0"}, False), ({"OCF_RESKEY_trace_ra": "no"}, False),
    ({"OCF_TRACE_RA": "y"}, False),      # ocf_is_true does not accept y
    ({}, False),
])
def test_tracing_wanted_as_ocf_is_true_reads_it(env, want):
    assert trace.wanted(env) is want


def test_trace_destination_rules():
    now = 1764615600.0  # fixed time: a fixed file name
    stamp = __import__("time").strftime("%Y-%m-%d.%H:%M:%S", __import__("time").localtime(now))
    base = {"OCF_RESOURCE_INSTANCE": "vm1"}
    assert trace.destination(dict(base, OCF_TRACE_FILE="5"), "RBDVirtualDomain", "start",
                             now) == ("fd", 5, None)
    assert trace.destination(dict(base, OCF_TRACE_FILE="/tmp/t/x"), "T", "start",
                             now) == ("file", "/tmp/t/x", None)
    # the default, under HA_VARLIB/trace_ra/<type>/<instance>.<action>.<timestamp>
    assert trace.destination(dict(base, HA_VARLIB="/var/lib/pacemaker"), "RBDVirtualDomain",
                             "monitor", now) == (
        "file", "/var/lib/pacemaker/trace_ra/RBDVirtualDomain/vm1.monitor." + stamp, None)
    assert trace.destination(base, "CephHealth", "start", now)[1] == \
        "/var/lib/heartbeat/trace_ra/CephHealth/vm1.start." + stamp
    assert trace.destination(dict(base, OCF_RESKEY_trace_dir="/srv/tr",
                                  OCF_RESOURCE_TYPE="X"), "T", "stop", now)[1] == \
        "/srv/tr/X/vm1.stop." + stamp
    # an unusable OCF_TRACE_FILE: warned about, the default used
    kind, path, warning = trace.destination(dict(base, OCF_TRACE_FILE="rel"), "T", "stop", now)
    assert kind == "file" and path.startswith("/var/lib/heartbeat/trace_ra/T/")
    assert "OCF_TRACE_FILE" in warning
    # by hand at a terminal, or without an instance: on stderr, as set -x would be
    assert trace.destination(base, "T", "stop", now, interactive=True)[0] == "stderr"
    assert trace.destination({}, "T", "stop", now)[0] == "stderr"
    # crm_resource --force-*/--validate sets OCF_TRACE_FILE=/dev/stderr
    assert trace.destination(dict(base, OCF_TRACE_FILE="/dev/stderr"), "T", "stop",
                             now)[0] == "stderr"


def test_trace_file_gets_the_steps_the_log_and_the_result(tmp_path):
    path = tmp_path / "traces" / "vm1.validate-all"
    env = _absent_env(tmp_path, OCF_TRACE_RA="1", OCF_TRACE_FILE=str(path))
    rc, _out, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "validate-all"], env)
    assert rc == ocf.OCF_ERR_INSTALLED
    text = path.read_text()
    assert "# env OCF_RESKEY_config=" in text
    assert re.search(r"^\+ +[0-9.]+ rbdvd\.validate:\d+$", text, re.M), text
    assert "DEBUG: " in text            # every level, though HA_debug is not set
    assert text.rstrip().splitlines()[-1].endswith(
        "exit 5 (OCF_ERR_INSTALLED): parameter config=%s: does not exist on this node; "
        "parameter ceph_conf=%s: does not exist on this node"
        % (ocf.shown(env["OCF_RESKEY_config"]), ocf.shown(env["OCF_RESKEY_ceph_conf"])))
    assert "DEBUG" not in err           # the cluster log is not flooded by the trace


def test_crm_resource_trace_writes_under_ha_varlib(tmp_path):
    """What `crm resource trace vm1` leads to: OCF_RESKEY_trace_ra=1 and nothing else; the
    agent runs with stdin not a terminal, as under pacemaker-execd."""
    env = dict(os.environ, **_absent_env(tmp_path, OCF_RESKEY_trace_ra="1",
                                         HA_VARLIB=str(tmp_path / "varlib"),
                                         OCF_CHECK_LEVEL="0"))
    r = subprocess.run([str(ROOT / "agents" / "RBDVirtualDomain"), "validate-all"], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    files = list((tmp_path / "varlib" / "trace_ra" / "RBDVirtualDomain").iterdir())
    assert len(files) == 1
    assert re.fullmatch(r"vm1\.validate-all\.\d{4}-\d\d-\d\d\.\d\d:\d\d:\d\d", files[0].name)
    assert "exit 0 (OCF_SUCCESS)" in files[0].read_text()


def test_unwritable_trace_destination_does_not_change_the_result(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = _absent_env(tmp_path, OCF_TRACE_RA="1", OCF_CHECK_LEVEL="0",
                      OCF_TRACE_FILE=str(blocker / "sub" / "trace"))
    rc, _out, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "validate-all"], env)
    assert rc == ocf.OCF_SUCCESS
    assert "trace not going to happen" in err


def test_no_tracing_no_trace_module_on_the_monitor_path(tmp_path):
    code = ("import io, sys; from vmceph import ocf; "
            "from vmceph.rbdvd import RBDVirtualDomain; "
            "rc = ocf.run(RBDVirtualDomain(), ['x', 'monitor'], "
            "{'OCF_RESKEY_CRM_meta_interval': '0', 'HA_RSCTMP': sys.argv[1]}, "
            "io.StringIO(), io.StringIO()); "
            "print(rc, 'vmceph.trace' in sys.modules)")
    r = subprocess.run(["/usr/bin/python3", "-c", code, str(tmp_path)], capture_output=True,
                       text=True, env={"PYTHONPATH": str(ROOT / "lib")}, timeout=60)
    assert r.stdout.split() == ["7", "False"], (r.stdout, r.stderr)   # a probe: not running


# ------------------------------------------------------------ validate-all check levels

@pytest.mark.parametrize("agent,argv0", [(RBDVirtualDomain, "RBDVirtualDomain"),
                                         (CephHealth, "CephHealth")])
@pytest.mark.parametrize("level,variable,rc", [
    (None, None, ocf.OCF_ERR_INSTALLED),        # unset: the agent's default, the full check
    ("0", "OCF_CHECK_LEVEL", ocf.OCF_SUCCESS),  # values only: nothing of this node
    ("5", "OCF_CHECK_LEVEL", ocf.OCF_SUCCESS),  # the next lower level: 0
    ("10", "OCF_CHECK_LEVEL", ocf.OCF_ERR_INSTALLED),
    ("20", "OCF_CHECK_LEVEL", ocf.OCF_ERR_INSTALLED),
    ("0", "OCF_RESKEY_OCF_CHECK_LEVEL", ocf.OCF_SUCCESS),   # as ocf-shellfuncs reads it
])
def test_validate_all_checks_this_node_only_from_level_10(tmp_path, agent, argv0, level,
                                                          variable, rc):
    env = _absent_env(tmp_path)
    if level is not None:
        env[variable] = level
    got, _out, err = _run(agent(), [argv0, "validate-all"], env)
    assert got == rc, err


@pytest.mark.parametrize("params", [{"OCF_RESKEY_config": "vm1.xml"},       # not absolute
                                    {"OCF_RESKEY_blocklist_expire": "5"},    # out of range
                                    {"OCF_RESKEY_snapshot": "/s", "OCF_RESKEY_force_stop": "1"}])
def test_validate_all_level_0_still_checks_the_values(tmp_path, params):
    env = dict(_absent_env(tmp_path, OCF_CHECK_LEVEL="0"), **params)
    rc, _out, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "validate-all"], env)
    assert rc == ocf.OCF_ERR_CONFIGURED, err


def test_validate_all_level_0_asks_no_program(tmp_path, monkeypatch):
    """Not Pacemaker either (the unknown-node-name warning asks crm_mon): nothing on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    env = _absent_env(tmp_path, OCF_CHECK_LEVEL="0",
                      OCF_RESKEY_node_addresses="node9=10.0.0.9")
    rc, _out, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "validate-all"], env)
    assert rc == ocf.OCF_SUCCESS, err


def test_monitor_check_level_from_the_reskey_variable():
    ctx = ocf.Context(RBDVirtualDomain.spec, "monitor", {"OCF_RESKEY_OCF_CHECK_LEVEL": "20"},
                      ocf.Log("t", {}, io.StringIO()), ocf.Deadline(10))
    assert ctx.depth == 20
