"""The OCF layer (lib/vmceph/ocf.py) and the agents' meta-data.

Meta-data is checked the way the tools that consume it check it: resource-agents'
ra-api-1.dtd with ``xmllint --dtdvalid`` (what ocf-tester runs) and OCF 1.1's RelaxNG
schema; RBDVirtualDomain's parameters against the installed ocf:heartbeat:VirtualDomain.
"""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmceph import ocf
from vmceph.ocf import (Action, AgentSpec, ConfigError, Deadline, Log, Param, Params,
                        deadline_from_env, parse_duration)
from vmceph.rbdvd import RBDVirtualDomain
from vmceph.rbdvd_params import SPEC as RBDVD_SPEC

ROOT = Path(__file__).resolve().parents[2]
AGENTS = {"RBDVirtualDomain": ROOT / "agents" / "RBDVirtualDomain",
          "CephHealth": ROOT / "agents" / "CephHealth"}
DTD = Path("/usr/share/resource-agents/ra-api-1.dtd")
# The OCF 1.1 schema as pcs ships it (make deps installs pcs)
RNG = Path("/usr/share/pcs/data/ocf-1.1.rng")
VIRTUAL_DOMAIN = Path("/usr/lib/ocf/resource.d/heartbeat/VirtualDomain")


# ----------------------------------------------------------------------------- meta-data

@pytest.fixture(scope="module", params=sorted(AGENTS))
def metadata(request, tmp_path_factory):
    """(agent name, path of its meta-data file) as the executable prints it."""
    name = request.param
    r = subprocess.run([str(AGENTS[name]), "meta-data"], capture_output=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b"", "meta-data must print nothing on stderr: %r" % r.stderr
    path = tmp_path_factory.mktemp("md") / (name + ".xml")
    path.write_bytes(r.stdout)
    return name, path


def test_metadata_valid_against_ra_api_1_dtd(metadata):
    name, path = metadata
    if not DTD.exists():
        pytest.skip("resource-agents' %s is not installed (apt-get install resource-agents)"
                    % DTD)
    if not _which("xmllint"):
        pytest.skip("xmllint is not installed (apt-get install libxml2-utils)")
    r = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(DTD), str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "%s meta-data fails ra-api-1.dtd:\n%s" % (name, r.stderr)
    assert "validity error" not in r.stderr


def test_metadata_has_the_doctype_ocf_tester_needs(metadata):
    _name, path = metadata
    head = path.read_text().splitlines()[:2]
    assert head[0].startswith("<?xml")
    assert head[1] == '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'


def test_metadata_valid_against_ocf_1_1_relaxng(metadata):
    from lxml import etree
    name, path = metadata
    if not RNG.exists():
        pytest.skip("OCF 1.1 SCHEMA CHECK NOT RUN: %s not found (install pcs: make deps)"
                    % RNG)
    schema = etree.RelaxNG(etree.parse(str(RNG)))
    doc = etree.parse(str(path))
    assert schema.validate(doc), "%s meta-data fails ra-api-1.1.rng: %s" % (
        name, schema.error_log)


def test_metadata_matches_the_declared_spec(metadata):
    """Every declared parameter and action is in the XML, defaults as typed values."""
    from lxml import etree
    name, path = metadata
    spec = RBDVD_SPEC if name == "RBDVirtualDomain" else _cephhealth_spec()
    root = etree.parse(str(path)).getroot()
    assert root.get("name") == name
    params = {p.get("name"): p for p in root.iterfind("parameters/parameter")}
    assert list(params) == [p.name for p in spec.params]
    for p in spec.params:
        e = params[p.name]
        assert e.findtext("shortdesc").strip(), p.name
        assert e.findtext("longdesc").strip(), p.name
        assert e.find("content").get("type") == p.type
        assert e.get("required") == ("1" if p.required else "0")
        default = e.find("content").get("default")
        if p.default is None:
            assert default is None, p.name
        else:
            # the advertised default parses back to the declared value with the agent's
            # own parser: what an admin copies from the meta-data is accepted
            assert p.parse(default) == p.default, p.name
    actions = [a.get("name") for a in root.iterfind("actions/action")]
    assert actions == [a.name for a in spec.actions]
    for a in root.iterfind("actions/action"):
        assert parse_duration(a.get("timeout")) > 0


def test_metadata_escapes_descriptions():
    """Built with lxml: markup characters in a description cannot break the XML."""
    from lxml import etree
    spec = AgentSpec("T", "a <b> & c", "x < y & 'z'", [Param("p", shortdesc="<&>")],
                     [Action("start", "20s")])
    root = etree.fromstring(ocf.metadata_xml(spec).split(b"\n", 2)[2])
    assert root.findtext("shortdesc") == "a <b> & c"
    assert root.find("parameters/parameter").findtext("shortdesc") == "<&>"


def _cephhealth_spec():
    from vmceph.cephhealth import SPEC
    return SPEC


# ------------------------------------------------------- compatibility with VirtualDomain

def _vd_metadata():
    if not VIRTUAL_DOMAIN.exists():
        pytest.skip("resource-agents is not installed: no %s to compare with" % VIRTUAL_DOMAIN)
    r = subprocess.run([str(VIRTUAL_DOMAIN), "meta-data"], capture_output=True, timeout=30,
                       env={"OCF_ROOT": "/usr/lib/ocf", "PATH": "/usr/bin:/bin:/usr/sbin"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def _script_defaults():
    """OCF_RESKEY_<name>_default=<literal> lines of the VirtualDomain script: the defaults
    it applies but does not all advertise in its meta-data."""
    out = {}
    for m in re.finditer(r'^OCF_RESKEY_(\w+)_default="?([^"$\n]*)"?$', VIRTUAL_DOMAIN.read_text(),
                         re.M):
        out[m.group(1)] = m.group(2)
    return out


def _norm(ptype, value):
    if ptype == "boolean":
        return (value or "").strip().lower() in ("1", "true", "yes", "on", "y")
    if ptype == "integer":
        return None if value in (None, "") else int(value)
    return value or ""


def test_accepts_every_virtualdomain_parameter_with_same_type_and_default():
    from lxml import etree
    root = etree.fromstring(_vd_metadata())
    vd = root.findall("parameters/parameter")
    assert len(vd) == 27, "resource-agents changed VirtualDomain's parameters: re-check"
    script = _script_defaults()
    # VirtualDomain takes its hypervisor default at run time from 'virsh --quiet uri' and
    # declares none; so does RBDVirtualDomain (test_parity.py)
    runtime = {}
    ours = RBDVD_SPEC.param_index
    for e in vd:
        name = e.get("name")
        assert name in ours, "VirtualDomain parameter %s is not accepted" % name
        p = ours[name]
        vtype = e.find("content").get("type")
        assert p.type == vtype, name
        assert p.required == (e.get("required") == "1"), name
        vdefault = e.find("content").get("default")
        if vdefault is None:
            vdefault = runtime.get(name, script.get(name))
        assert _norm(vtype, p.default_text()) == _norm(vtype, vdefault), (
            "%s: default %r, VirtualDomain's %r" % (name, p.default_text(), vdefault))
        assert p.inherited, name


def test_inherited_parameters_come_first_and_are_exactly_virtualdomains():
    names = [p.name for p in RBDVD_SPEC.params if p.inherited]
    assert len(names) == 27
    assert [p.name for p in RBDVD_SPEC.params[:27]] == names


# ----------------------------------------------------------------------------- parameters

# exactly what ocf-shellfuncs' ocf_is_true accepts (resource-agents 4.12)
TRUE_SPELLINGS = ["1", "true", "TRUE", "True", "yes", "YES", "on", "ON", "ja"]
# false for ocf_is_true and for Pacemaker's crm_is_true alike
FALSE_SPELLINGS = ["0", "false", "FALSE", "False", "no", "No", "NO", "off", "OFF", "Off",
                   "n", "N"]
# true for Pacemaker, false for ocf_is_true: refused as ambiguous (issue 16: 'true ' passed)
AMBIGUOUS_SPELLINGS = ["On", "y", "Y", "Yes", "tRUE", " true ", "true ", "yes\n"]


@pytest.mark.parametrize("text", TRUE_SPELLINGS)
def test_boolean_true_spellings(text):
    assert Param("b", type="boolean").parse(text) is True


@pytest.mark.parametrize("text", FALSE_SPELLINGS)
def test_boolean_false_spellings(text):
    assert Param("b", type="boolean").parse(text) is False


@pytest.mark.parametrize("text", AMBIGUOUS_SPELLINGS)
def test_boolean_ambiguous_spellings_refused(text):
    with pytest.raises(ValueError) as e:
        Param("force_stop", type="boolean").parse(text)
    assert "force_stop" in str(e.value)


@pytest.mark.parametrize("text", ["maybe", "2", "truee", "yes please", "-1", "t", " no "])
def test_boolean_invalid_names_the_parameter(text):
    with pytest.raises(ValueError) as e:
        Param("force_stop", type="boolean").parse(text)
    assert "force_stop" in str(e.value) and "boolean" in str(e.value)


@pytest.mark.parametrize("text,value", [("42", 42), ("0", 0), ("-3", -3), ("007", 7),
                                        ("9" * 19, int("9" * 19))])
def test_integer_values(text, value):
    assert Param("i", type="integer").parse(text) == value


# issue 16: Python's int() takes all of these; no shell agent or Pacemaker does
@pytest.mark.parametrize("text", ["4x", "1.5", "0x10", "1e3", "", "ten", " 7 ", "+5", "1_000",
                                  "\u0663\u0666", "\uff15", "\u00b2", "--1", "-", "7\n"])
def test_integer_invalid(text):
    with pytest.raises(ValueError, match="parameter migration_speed=.*(expected an integer|"
                                         "control character)"):
        Param("migration_speed", type="integer").parse(text)


@pytest.mark.parametrize("text", ["1" + "0" * 19, "9" * 400, "-" + "9" * 400])
def test_integer_huge_values_are_out_of_range_not_a_crash(text):
    with pytest.raises(ValueError, match="out of range"):
        Param("migration_speed", type="integer").parse(text)


@pytest.mark.parametrize("text,ok", [("0", False), ("1", True), ("65535", True),
                                     ("65536", False), (str(2 ** 63), False)])
def test_integer_ranges(text, ok):
    p = Param("migrateport", type="integer", minimum=1, maximum=65535)
    if ok:
        assert p.parse(text) == int(text)
    else:
        with pytest.raises(ValueError, match="migrateport.*must be 1 to 65535"):
            p.parse(text)


@pytest.mark.parametrize("ptype", ["string", "integer", "boolean"])
@pytest.mark.parametrize("text", ["\udcff\udcfe", "qemu:///sys\udce9tem"])
def test_non_utf8_values_refused_with_a_reason(ptype, text):
    with pytest.raises(ValueError, match="hypervisor=.*not valid UTF-8"):
        Param("hypervisor", type=ptype).parse(text)


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\x1bb", "a\x7fb", "ocf-exit-reason:x\n"])
def test_control_characters_refused_in_single_line_values(text):
    with pytest.raises(ValueError, match="control character"):
        Param("ceph_user").parse(text)
    assert Param("pools", multiline=True).parse("rbd\nother\tthird") == "rbd\nother\tthird"


def test_choices_enforced_and_listed():
    p = RBDVD_SPEC.param_index["unknown_client_policy"]
    assert p.parse("blocklist") == "blocklist"
    with pytest.raises(ValueError) as e:
        p.parse("ignore")
    assert "'refuse'" in str(e.value) and "'blocklist'" in str(e.value)


def test_choices_are_documented_in_the_longdesc():
    p = RBDVD_SPEC.param_index["unknown_client_policy"]
    assert "Accepted values: refuse, blocklist." in ocf.param_longdesc(p)


@pytest.mark.parametrize("name,text,message", [
    ("config", "vm1.xml", "must be an absolute path"),
    ("migration_downtime", "-1", "must be 0 to 3600000"),
    ("migrateport", "-5", "must be 1 to 65535"),
    ("migrateport", "65536", "must be 1 to 65535"),
    ("migrateport", str(2 ** 63), "must be 1 to 65535"),
    ("blocklist_expire", "30", "must be 60 to"),
    ("hypervisor", "qemu", "not a libvirt URI"),
    ("hypervisor", "qemu+foo:///system", "unknown libvirt transport"),
    ("migration_transport", "rsh", "unknown libvirt transport"),
    ("ceph_user", "client.admin", "without 'client.'"),
    ("ceph_user", "a b", "ASCII letters"),
    ("migration_user", "a@b", "no '@'"),
    ("snapshot", "rel/dir", "must be an absolute path"),
    ("config", "/" + "a" * 300, "path too long"),
    ("health_attribute", "#health ceph", "node attribute name"),
])
def test_checks_refuse_bad_values(name, text, message):
    with pytest.raises(ValueError, match=message):
        RBDVD_SPEC.param_index[name].parse(text)


def _params(**env):
    return Params(RBDVD_SPEC, {"OCF_RESKEY_" + k: v for k, v in env.items()})


def test_params_typed_access_and_defaults():
    p = _params(config="/etc/vm1.xml", force_stop="yes", migration_speed="100")
    assert p.config == "/etc/vm1.xml"
    assert p.force_stop is True
    assert p.migration_speed == 100
    assert p.hypervisor is None          # default: asked from `virsh uri` at run time
    assert p.blocklist_expire == 3600
    assert p.given("force_stop") and not p.given("hypervisor")


def test_params_empty_non_string_means_default():
    p = _params(config="/etc/vm1.xml", autoset_utilization_cpu="", migrateport="")
    assert p.autoset_utilization_cpu is True
    assert p.migrateport is None


def test_params_bad_value_is_a_config_error_on_access():
    p = _params(config="/etc/vm1.xml", force_stop="perhaps")
    with pytest.raises(ConfigError, match="force_stop"):
        p.force_stop


def test_params_read_only_and_unknown_names():
    p = _params(config="/etc/vm1.xml")
    with pytest.raises(AttributeError):
        p.config = "/x"
    with pytest.raises(AttributeError):
        p.no_such_parameter


def test_validate_required_missing():
    with pytest.raises(ConfigError, match="required parameter config is not set"):
        _params().validate()


def test_validate_lists_every_problem_at_once():
    with pytest.raises(ConfigError) as e:
        _params(config="relative.xml", force_stop="x", blocklist_expire="1").validate()
    reason = e.value.reason
    for name in ("config", "force_stop", "blocklist_expire"):
        assert name in reason


@pytest.mark.parametrize("name,value", [("stateless", "true"), ("backingfile", "/var/base.qcow2"),
                                        ("copyindirs", "/srv")])
def test_unsupported_parameters_refused_with_reason(name, value):
    with pytest.raises(ConfigError) as e:
        _params(config="/etc/vm1.xml", **{name: value}).validate()
    assert "%s=%r is not supported by RBDVirtualDomain" % (name, value) in e.value.reason
    assert "rbd clone" in e.value.reason          # the reason says what to do instead


@pytest.mark.parametrize("name,value", [("stateless", "false"), ("backingfile", ""),
                                        ("copyindirs", "")])
def test_unsupported_parameters_accepted_at_their_default(name, value):
    here = os.path.abspath(__file__)  # any regular file: validate checks that they are
    _params(config=here, ceph_conf=here, **{name: value}).validate()


def test_param_declaration_errors():
    with pytest.raises(ValueError, match="unknown parameter type"):
        Param("x", type="float")
    with pytest.raises(ValueError, match="duplicate"):
        AgentSpec("T", "", "", [Param("a"), Param("a")], [])


# ----------------------------------------------------------------------------- dispatcher

def _run(agent, argv, env=None):
    out, err = io.StringIO(), io.StringIO()
    rc = ocf.run(agent, argv=argv, environ=dict(env or {}), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def _reasons(err):
    return [line[len("ocf-exit-reason:"):] for line in err.splitlines()
            if line.startswith("ocf-exit-reason:")]


@pytest.fixture
def rbdvd_env(tmp_path):
    return {"HA_RSCTMP": str(tmp_path / "rsctmp"), "OCF_RESOURCE_INSTANCE": "vm1",
            "OCF_RESKEY_config": str(tmp_path / "missing" / "vm1.xml"),
            "OCF_RESKEY_CRM_meta_timeout": "20000"}


def test_unknown_action_is_unimplemented_with_exit_reason():
    rc, _, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "promote"])
    assert rc == ocf.OCF_ERR_UNIMPLEMENTED == 3
    assert _reasons(err) == ["action 'promote' is not implemented by RBDVirtualDomain"]


def test_meta_data_action_succeeds_and_prints_xml():
    rc, out, _ = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "meta-data"])
    assert rc == 0
    assert out.startswith('<?xml version="1.0"?>') and "<resource-agent" in out


@pytest.mark.parametrize("argv", [["RBDVirtualDomain"]])   # extra ones: test_ocf_conventions
def test_wrong_argument_count(argv):
    rc, _, err = _run(RBDVirtualDomain(), argv)
    assert rc == ocf.OCF_ERR_ARGS == 2
    assert err.startswith("usage: RBDVirtualDomain {start|stop|monitor")


def test_probe_with_missing_config_is_not_running(rbdvd_env):
    rc, _, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "monitor"], rbdvd_env)
    assert rc == ocf.OCF_NOT_RUNNING
    assert _reasons(err) == []


def test_recurring_monitor_with_missing_config_is_not_installed(rbdvd_env):
    env = dict(rbdvd_env, OCF_RESKEY_CRM_meta_interval="10000")
    rc, _, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "monitor"], env)
    assert rc == ocf.OCF_ERR_INSTALLED == 5
    assert rbdvd_env["OCF_RESKEY_config"] in _reasons(err)[-1]


def test_status_is_monitor(rbdvd_env):
    env = dict(rbdvd_env, OCF_RESKEY_CRM_meta_interval="10000")
    assert _run(RBDVirtualDomain(), ["RBDVirtualDomain", "status"], env)[0] == 5
    assert _run(RBDVirtualDomain(), ["RBDVirtualDomain", "status"], rbdvd_env)[0] == 7


def test_stop_with_missing_config_and_nothing_remembered_succeeds(rbdvd_env):
    rc, _, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "stop"], rbdvd_env)
    assert rc == ocf.OCF_SUCCESS
    assert _reasons(err) == []


def test_stop_without_config_parameter_succeeds(rbdvd_env):
    env = {k: v for k, v in rbdvd_env.items() if k != "OCF_RESKEY_config"}
    assert _run(RBDVirtualDomain(), ["RBDVirtualDomain", "stop"], env)[0] == 0


def test_start_without_config_parameter_is_configured_error(rbdvd_env):
    env = {k: v for k, v in rbdvd_env.items() if k != "OCF_RESKEY_config"}
    rc, _, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "start"], env)
    assert rc == ocf.OCF_ERR_CONFIGURED
    assert "config" in _reasons(err)[-1]


def test_validate_all_with_bad_boolean_is_configured_error(rbdvd_env):
    env = dict(rbdvd_env, OCF_RESKEY_force_stop="sometimes")
    rc, _, err = _run(RBDVirtualDomain(), ["RBDVirtualDomain", "validate-all"], env)
    assert rc == ocf.OCF_ERR_CONFIGURED == 6
    assert "force_stop='sometimes'" in _reasons(err)[-1]


class _Buggy:
    """A minimal agent whose start has a bug, and whose stop raises an expected error."""
    spec = AgentSpec("Buggy", "s", "l", [Param("p")],
                     [Action("start", "20s"), Action("stop", "20s"), Action("monitor", "20s")])

    def validate(self, ctx):
        pass

    def start(self, ctx):
        return {}["no such key"]

    def stop(self, ctx):
        raise ocf.PermError("the Ceph user may not do that\nsecond line")

    def monitor(self, ctx):
        return ocf.OCF_SUCCESS


def test_unexpected_exception_is_generic_error_with_traceback_logged(tmp_path):
    logfile = tmp_path / "ha.log"
    rc, _, err = _run(_Buggy(), ["Buggy", "start"], {"HA_LOGFILE": str(logfile)})
    assert rc == ocf.OCF_ERR_GENERIC
    assert _reasons(err) == ["internal error in Buggy start (traceback in the cluster log); "
                             "please report it"]
    # HA_LOGFILE set: the log lines go there, not to stderr too (ha_log's rule)
    assert err.splitlines() == ["ocf-exit-reason:" + _reasons(err)[0]]
    logged = logfile.read_text()
    assert "ERR: Traceback" in logged and "KeyError" in logged
    rc, _, err = _run(_Buggy(), ["Buggy", "start"], {})
    assert "Traceback (most recent call last):" in err and "KeyError: 'no such key'" in err


@pytest.mark.parametrize("env,on_stderr", [
    ({}, True),
    ({"HA_LOGFACILITY": "none"}, True),       # no syslog: stderr is all there is
    ({"HA_LOGFACILITY": "daemon"}, False),
    ({"HA_LOGFILE": "LOG"}, False),
    ({"HA_LOGFILE": "/dev/null"}, True),      # not a regular file: ignored, stderr instead
])
def test_log_goes_to_stderr_only_without_facility_or_logfile(tmp_path, monkeypatch, env,
                                                             on_stderr):
    monkeypatch.setitem(sys.modules, "syslog", _Syslog())
    env = {k: v.replace("LOG", str(tmp_path / "ha.log")) for k, v in env.items()}
    s = io.StringIO()
    Log("T", env, s).info("hello")
    assert ("INFO: hello" in s.getvalue()) == on_stderr


def test_expected_error_gives_its_code_and_a_one_line_reason():
    rc, _, err = _run(_Buggy(), ["Buggy", "stop"])
    assert rc == ocf.OCF_ERR_PERM
    assert _reasons(err) == ["the Ceph user may not do that second line"]
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- deadline

class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.mark.parametrize("timeout_ms,margin", [(90000, 5.0), (20000, 2.0), (5000, 1.0),
                                               (1000, 0.5), (200000, 5.0)])
def test_deadline_from_timeout_with_margin(timeout_ms, margin):
    d = deadline_from_env({"OCF_RESKEY_CRM_meta_timeout": str(timeout_ms)}, 90)
    assert d.timeout == timeout_ms / 1000.0
    assert d.margin == margin
    assert d.end - d.start == pytest.approx(timeout_ms / 1000.0 - margin)


@pytest.mark.parametrize("raw", [None, "", "abc", "0", "-5000", "20s"])
def test_deadline_falls_back_to_the_advertised_timeout(raw):
    env = {} if raw is None else {"OCF_RESKEY_CRM_meta_timeout": raw}
    assert deadline_from_env(env, 90.0).timeout == 90.0
    assert deadline_from_env(env, None).timeout == 20.0


def test_deadline_remaining_expired_at_most():
    clock = Clock()
    d = Deadline(20, clock=clock)
    assert d.margin == 2.0 and d.remaining() == 18.0
    assert d.at_most(5) == 5 and d.at_most(60) == 18.0
    clock.t += 17.5
    assert d.elapsed() == 17.5 and d.at_most(5) == 0.5 and not d.expired()
    clock.t += 1
    assert d.expired() and d.remaining() == 0.0 and d.at_most(5) == 0.0


def test_deadline_explicit_margin():
    d = Deadline(10, margin_s=0, clock=Clock())
    assert d.remaining() == 10.0


def test_dispatcher_budgets_with_the_action_timeout(monkeypatch):
    seen = {}

    class A(_Buggy):
        def monitor(self, ctx):
            seen["timeout"] = ctx.deadline.timeout
            return 0
    _run(A(), ["Buggy", "monitor"], {"OCF_RESKEY_CRM_meta_timeout": "7000"})
    assert seen["timeout"] == 7.0
    _run(A(), ["Buggy", "monitor"], {})
    assert seen["timeout"] == 20.0                   # the meta-data's advertised 20s


# ----------------------------------------------------------------------------- logging

def test_log_debug_only_with_ha_debug():
    s = io.StringIO()
    log = Log("T(rsc)[1]", {}, s)
    log.debug("hidden %d", 1)
    log.info("shown %s", "x")
    assert s.getvalue() == "T(rsc)[1]: INFO: shown x\n"
    s2 = io.StringIO()
    Log("T", {"HA_debug": "1"}, s2).debug("now %s", "visible")
    assert s2.getvalue() == "T: DEBUG: now visible\n"
    for off in ("0", "", "false", "no"):
        s3 = io.StringIO()
        Log("T", {"HA_debug": off}, s3).debug("x")
        assert s3.getvalue() == ""


def test_log_writes_ha_logfile_and_debuglog(tmp_path):
    logfile, debuglog = tmp_path / "ha.log", tmp_path / "ha-debug.log"
    env = {"HA_LOGFILE": str(logfile), "HA_DEBUGLOG": str(debuglog), "HA_debug": "1"}
    log = Log("RBDVirtualDomain(vm1)[42]", env, io.StringIO())
    log.warning("blocklisting %s", "10.0.0.2:0/1")
    log.debug("details")
    lines = logfile.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("RBDVirtualDomain(vm1)[42]: WARNING: blocklisting 10.0.0.2:0/1")
    assert os.uname().nodename in lines[0]
    assert debuglog.read_text().strip().endswith("DEBUG: details")


def test_log_unwritable_logfile_does_not_break_the_agent(tmp_path):
    s = io.StringIO()
    Log("T", {"HA_LOGFILE": str(tmp_path / "no" / "dir" / "ha.log")}, s).error("still here")
    assert "ERR: still here" in s.getvalue()


class _Syslog:
    LOG_DAEMON, LOG_LOCAL5, LOG_PID = 24, 168, 1

    def __init__(self):
        self.opened, self.lines = [], []

    def openlog(self, ident, opt, fac):
        self.opened.append((ident, fac))

    def syslog(self, prio, line):
        self.lines.append((prio, line))


@pytest.mark.parametrize("facility", ["none", ""])
def test_log_facility_none_means_no_syslog(monkeypatch, facility):
    fake = _Syslog()
    monkeypatch.setitem(sys.modules, "syslog", fake)
    log = Log("T", {"HA_LOGFACILITY": facility}, io.StringIO())
    log.error("x")
    assert log.facility is None and fake.lines == []


def test_log_facility_goes_to_syslog(monkeypatch):
    fake = _Syslog()
    monkeypatch.setitem(sys.modules, "syslog", fake)
    log = Log("RBDVirtualDomain(vm1)[7]", {"HA_LOGFACILITY": "local5"}, io.StringIO())
    log.warning("w")
    log.error("e")
    assert fake.opened == [("RBDVirtualDomain", 168)]
    assert fake.lines == [(4, "RBDVirtualDomain(vm1)[7]: WARNING: w"),
                          (3, "RBDVirtualDomain(vm1)[7]: ERR: e")]


def test_exit_reason_is_one_line():
    s = io.StringIO()
    ocf.exit_reason("image rbd/a\n  is open\tby client.1", s)
    assert s.getvalue() == "ocf-exit-reason:image rbd/a is open by client.1\n"


# ----------------------------------------------------------------------------- durations

@pytest.mark.parametrize("text,seconds", [
    ("90s", 90.0), ("2min", 120.0), ("1500ms", 1.5), ("30", 30.0), ("5m", 300.0),
    ("1h", 3600.0), ("2hr", 7200.0), ("10sec", 10.0), ("250msec", 0.25), (" 20S ", 20.0),
    ("1.5s", 1.5), ("0", 0.0), (45, 45.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "s", "-5s", "", "5 days", "1d"])
def test_parse_duration_invalid(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_action_timeout_from_the_spec():
    assert RBDVD_SPEC.action_timeout("start") == 90.0
    assert RBDVD_SPEC.action_timeout("migrate_to") == 120.0
    assert RBDVD_SPEC.action_timeout("reload") == 60.0
    assert RBDVD_SPEC.action_timeout("promote") is None


def _which(prog):
    return any(os.access(os.path.join(d, prog), os.X_OK)
               for d in os.environ.get("PATH", "").split(":") + ["/usr/bin"])
