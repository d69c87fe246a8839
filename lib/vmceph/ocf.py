"""The OCF layer shared by every vmceph agent.

One place owns the Open Cluster Framework semantics, so the agents only implement actions:
- parameters are declared once, as typed data (``Param``); meta-data XML, validation,
  defaults and the parameter reference in the docs are all derived from that declaration;
- one dispatcher (``run``) maps the action name and the environment Pacemaker passes to the
  agent's methods, with the probe / recurring-monitor / stop rules of resource-agents'
  ocf-rarun: with an invalid environment a stop does what it safely can, a probe answers
  from what it can observe, and a recurring monitor fails with the real error;
- errors are exceptions carrying their OCF exit code (``OCFError``); the dispatcher prints
  the exit reason (``ocf-exit-reason:...`` on stderr, as ocf_exit_reason does) and exits;
- every action gets a ``Deadline`` from ``OCF_RESKEY_CRM_meta_timeout``;
- logging follows resource-agents' environment conventions (HA_LOGFILE, HA_LOGFACILITY,
  HA_debug, HA_DEBUGLOG).

This module is on the monitor hot path, which runs every few seconds for every VM on a
node: it imports nothing heavy at module level (no lxml, dataclasses, enum, re, logging).
``python3 -X importtime`` here: dataclasses 8.5 ms, lxml.etree 15 ms, re 2.7 ms.
"""

import os
import sys
import time

# Exit codes (OCF 1.1, section "Return codes").
OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_PERM = 4
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7

CODE_NAMES = {
    OCF_SUCCESS: "OCF_SUCCESS", OCF_ERR_GENERIC: "OCF_ERR_GENERIC", OCF_ERR_ARGS: "OCF_ERR_ARGS",
    OCF_ERR_UNIMPLEMENTED: "OCF_ERR_UNIMPLEMENTED", OCF_ERR_PERM: "OCF_ERR_PERM",
    OCF_ERR_INSTALLED: "OCF_ERR_INSTALLED", OCF_ERR_CONFIGURED: "OCF_ERR_CONFIGURED",
    OCF_NOT_RUNNING: "OCF_NOT_RUNNING",
}


class OCFError(Exception):
    """An expected failure: carries the OCF exit code and a reason a person can act on."""

    code = OCF_ERR_GENERIC

    def __init__(self, reason, code=None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class GenericError(OCFError):
    code = OCF_ERR_GENERIC


class PermError(OCFError):
    code = OCF_ERR_PERM


class InstalledError(OCFError):
    """Something this node lacks (a file, a program, a module): another node may do better."""
    code = OCF_ERR_INSTALLED


class ConfigError(OCFError):
    """The resource's configuration is wrong: no node can do better."""
    code = OCF_ERR_CONFIGURED


# ---------------------------------------------------------------------------- parameters
#
# Values are parsed strictly: what validate-all accepts, every action must handle the same
# way (issue 16: '1_000', '５', '+5', 'true ' and a 400-digit number all got through
# Python's int() or str.strip() and failed later, or meant something else to the shell
# agents). The types below are the only place that decides what a value may look like.

class NotHere(ValueError):
    """A value that is well-formed but names something this node lacks (a file, a
    program): OCF_ERR_INSTALLED, another node may do better."""


# ocf-shellfuncs' ocf_is_true accepts exactly these (case-sensitive); Pacemaker's
# crm_is_true() accepts true/on/yes/y/1 in any case. A spelling only one of them reads as
# true ('Yes', 'y', 'On') means "false" to ocf:heartbeat:VirtualDomain and "true" to
# Pacemaker: refused as ambiguous rather than guessed.
BOOL_TRUE = ("1", "yes", "YES", "true", "TRUE", "True", "on", "ON", "ja")
BOOL_FALSE_WORDS = ("0", "no", "false", "off", "n")  # any case: false for both readers

# The longest decimal integer worth reading: beyond 19 digits no parameter makes sense,
# and int() of a huge string is slow (Python caps it at 4300 digits with an error).
_INT_MAX_DIGITS = 19


def _bad_text(text, multiline):
    """Why ``text`` cannot be a parameter value, or None. Non-UTF-8 bytes arrive from the
    environment as surrogate escapes (U+DC80..U+DCFF): libvirt and librados would fail
    on them with UnicodeEncodeError (issue 16). Control characters could forge log lines."""
    for i, c in enumerate(text):
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:
            return "is not valid UTF-8 (byte 0x%02x at character %d)" % (o - 0xDC00, i)
        if 0xD800 <= o <= 0xDFFF:
            return "contains an unpaired surrogate at character %d" % i
        if o < 0x20 or o == 0x7F:
            if multiline and c in "\t\n":
                continue
            return "contains the control character 0x%02x at character %d" % (o, i)
    return None


def _parse_bool(text):
    if text in BOOL_TRUE:
        return True
    if text.lower() in BOOL_FALSE_WORDS:
        return False
    if text.strip().lower() in ("yes", "true", "on", "y", "1"):
        raise ValueError("ambiguous boolean: ocf-shellfuncs reads it as false, Pacemaker "
                         "as true; write true, yes, on or 1 (or false, no, off, 0)")
    raise ValueError("expected a boolean: true, yes, on, 1 or false, no, off, 0")


def _parse_int(text):
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError("expected an integer (ASCII decimal digits, optionally a leading "
                         "'-'; no spaces, '+', '_' or other numerals)")
    if len(digits.lstrip("0")) > _INT_MAX_DIGITS:
        raise ValueError("integer out of range (%d digits)" % len(digits))
    return int(text, 10)


_PARSERS = {"string": str, "integer": _parse_int, "boolean": _parse_bool}


class Param:
    """One agent parameter, declared once.

    ``choices``: the accepted values of a string (OCF 1.0 has no ``select`` type and
    ocf-tester validates against the 1.0 DTD, so the choices live in the description and
    are enforced here). ``minimum``/``maximum``: the range of an integer. ``check``: an
    optional callable(value) raising ValueError, a pure check of the value's shape.
    ``local``: an optional callable(value) that checks what the value names on this node
    (a file, a program), raising ``NotHere`` (OCF_ERR_INSTALLED) or ValueError; only
    ``Params.validate()`` runs it, so reading a parameter stays cheap. ``multiline``: tabs
    and newlines are allowed (lists); otherwise every control character is refused.
    ``inherited``: the parameter comes from ocf:heartbeat:VirtualDomain (documentation
    groups them). ``unsupported``: a reason; the parameter is accepted but any non-default
    value is refused by validation with that reason (never silently ignored).
    """

    __slots__ = ("name", "type", "default", "required", "unique", "shortdesc", "longdesc",
                 "choices", "check", "inherited", "unsupported", "advanced", "minimum",
                 "maximum", "local", "multiline")

    def __init__(self, name, type="string", default=None, required=False, unique=False,
                 shortdesc="", longdesc="", choices=None, check=None, inherited=False,
                 unsupported=None, advanced=False, minimum=None, maximum=None, local=None,
                 multiline=False):
        if type not in _PARSERS:
            raise ValueError("unknown parameter type %r" % type)
        if (minimum is not None or maximum is not None) and type != "integer":
            raise ValueError("minimum/maximum of non-integer parameter %s" % name)
        self.name = name
        self.type = type
        self.default = default
        self.required = required
        self.unique = unique
        self.shortdesc = shortdesc
        self.longdesc = longdesc
        self.choices = tuple(choices) if choices else None
        self.check = check
        self.inherited = inherited
        self.unsupported = unsupported
        self.advanced = advanced
        self.minimum = minimum
        self.maximum = maximum
        self.local = local
        self.multiline = multiline

    def default_text(self):
        """The default as meta-data shows it (booleans as true/false), or None."""
        if self.default is None:
            return None
        if self.type == "boolean":
            return "true" if self.default else "false"
        return str(self.default)

    def range_text(self):
        if self.minimum is not None and self.maximum is not None:
            return "%d to %d" % (self.minimum, self.maximum)
        if self.minimum is not None:
            return "at least %d" % self.minimum
        if self.maximum is not None:
            return "at most %d" % self.maximum
        return None

    def _fail(self, text, why):
        return "parameter %s=%s: %s" % (self.name, shown(text), why)

    def parse(self, text):
        """Typed value of ``text``; ValueError with a message naming the parameter."""
        bad = _bad_text(text, self.multiline)
        if bad:
            raise ValueError(self._fail(text, bad))
        try:
            value = _PARSERS[self.type](text)
        except ValueError as e:
            raise ValueError(self._fail(text, e)) from None
        if (self.minimum is not None and value < self.minimum) or \
                (self.maximum is not None and value > self.maximum):
            raise ValueError(self._fail(text, "must be %s" % self.range_text()))
        if self.choices is not None and value not in self.choices:
            raise ValueError(self._fail(text, "must be one of %s"
                                        % ", ".join(repr(c) for c in self.choices)))
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as e:
                raise ValueError(self._fail(text, e)) from None
        return value

    def check_here(self, value, text):
        """Run the ``local`` check; NotHere / ValueError naming the parameter."""
        if self.local is None or value in (None, ""):
            return
        try:
            self.local(value)
        except NotHere as e:
            raise NotHere(self._fail(text, e)) from None
        except ValueError as e:
            raise ValueError(self._fail(text, e)) from None


def shown(value, limit=200):
    """``value`` for a message: quoted, escaped (see ``escape``) and cut to ``limit``."""
    text = "'%s'" % escape(value) if isinstance(value, str) else escape(str(value))
    if len(text) > limit:
        text = "%s...(%d characters)" % (text[:limit], len(value) if isinstance(value, str)
                                         else len(text))
    return text


# ------------------------------------------------------------------ reusable value checks

_PATH_MAX = 4095   # Linux PATH_MAX minus the NUL; longer fails with ENAMETOOLONG anywhere
_NAME_MAX = 255


def absolute_path(v):
    """An absolute path that could exist (its length fits Linux's limits), or empty."""
    if not v:
        return
    if not v.startswith("/"):
        raise ValueError("must be an absolute path")
    if len(os.fsencode(v)) > _PATH_MAX or any(len(os.fsencode(c)) > _NAME_MAX
                                              for c in v.split("/")):
        raise ValueError("path too long for Linux (at most %d bytes, %d per component)"
                         % (_PATH_MAX, _NAME_MAX))


def _kind_of(mode):
    import stat
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def _stat_here(path):
    """os.stat of ``path``, with every failure a NotHere naming the reason."""
    import errno
    try:
        return os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            if os.path.islink(path):
                raise NotHere("is a dangling symbolic link on this node") from None
            raise NotHere("does not exist on this node") from None
        if e.errno == errno.ENAMETOOLONG:
            raise ValueError("path too long (ENAMETOOLONG)") from None
        raise NotHere("cannot be used on this node: %s" % (e.strerror or e)) from None


def regular_file(path):
    """``path`` names a regular file here (a FIFO would block the reader)."""
    import stat
    st = _stat_here(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotHere("is %s, not a regular file, on this node" % _kind_of(st.st_mode))


def directory_or_absent(path):
    """``path`` is a directory here, or does not exist yet (it is created when needed)."""
    import stat
    try:
        st = _stat_here(path)
    except NotHere as e:
        if str(e) == "does not exist on this node":
            parent = os.path.dirname(path.rstrip("/")) or "/"
            if parent != path:
                try:
                    directory_or_absent(parent)
                except NotHere as pe:
                    raise NotHere("cannot be created: its parent %s %s"
                                  % (shown(parent), pe)) from None
            return
        raise
    if not stat.S_ISDIR(st.st_mode):
        raise NotHere("is %s, not a directory, on this node" % _kind_of(st.st_mode))


def executables(text, path_env=None):
    """Every word of ``text`` is a program: an absolute path to an executable regular
    file, or a name found in PATH (as the program runner finds it)."""
    for word in text.split():
        if "/" in word:
            if not word.startswith("/"):
                raise ValueError("%s must be an absolute path or a program name in PATH"
                                 % shown(word))
            try:
                regular_file(word)
            except NotHere as e:
                raise NotHere("%s %s" % (shown(word), e)) from None
            if not os.access(word, os.X_OK):
                raise NotHere("%s is not executable on this node" % shown(word))
            continue
        dirs = (path_env if path_env is not None else
                os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")).split(":")
        if not any(os.path.isfile(os.path.join(d, word)) and
                   os.access(os.path.join(d, word), os.X_OK) for d in dirs if d):
            raise NotHere("program %s is not in PATH on this node" % shown(word))


# libvirt URI transports ('driver+transport://'): 'ext' runs the program named by the
# URI's command= on every connection (libvirt's design), which an agent that connects at
# every probe and stop must not do unless the administrator says so explicitly.
LIBVIRT_TRANSPORTS = ("unix", "ssh", "libssh", "libssh2", "tcp", "tls")


def libvirt_uri(text, allow_ext=False):
    """Refuse what is not a libvirt URI 'driver[+transport]:///path' or
    'driver[+transport]://[user@]host[:port]/path[?query]' with an allowed transport."""
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme:
        raise ValueError("not a libvirt URI (driver[+transport]://[host]/path)")
    driver, plus, transport = scheme.partition("+")
    if not driver or not (driver.isascii() and driver.replace("_", "").isalnum()):
        raise ValueError("not a libvirt URI: bad driver name %s" % shown(driver))
    if plus:
        transport_name(transport, allow_ext)
    if any(c.isspace() for c in text):
        raise ValueError("a URI contains no white space")


def transport_name(name, allow_ext=False):
    if name == "ext" and allow_ext:
        return
    if name == "ext":
        raise ValueError("the 'ext' transport runs an arbitrary program at every "
                         "connection; set allow_ext_transport=true to allow it")
    if name not in LIBVIRT_TRANSPORTS:
        raise ValueError("unknown libvirt transport %s (accepted: %s)"
                         % (shown(name), ", ".join(LIBVIRT_TRANSPORTS)))


def plain_name(text):
    """A name that is safe on a command line and in a URI: ASCII letters, digits and
    '._-@:' only."""
    if not all(c.isascii() and (c.isalnum() or c in "._-@:") for c in text):
        raise ValueError("may contain only ASCII letters, digits and . _ - @ :")


def ceph_id(v):
    """A Ceph client id as librados takes it: without 'client.'."""
    if not v:
        return
    plain_name(v)
    if v.startswith("client."):
        raise ValueError("give the id without 'client.' (%s)" % v[len("client."):])


def attribute_name(v):
    """A node attribute name Pacemaker and attrd_updater take as it is."""
    if v and not all(c.isascii() and (c.isalnum() or c in "#._-") for c in v):
        raise ValueError("a node attribute name contains only ASCII letters, digits and "
                         "# . _ -")


class Params:
    """The typed values of an agent's parameters, read from ``OCF_RESKEY_*``.

    ``given`` is the set of names the environment set explicitly. Access by attribute:
    ``params.config``. Parsing is lazy per parameter so that the monitor path pays only
    for what it reads; ``validate()`` parses everything.
    """

    def __init__(self, spec, environ):
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_env", environ)
        object.__setattr__(self, "_cache", {})

    def _param(self, name):
        try:
            return self._spec.param_index[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getattr__(self, name):
        cache = self._cache
        if name in cache:
            return cache[name]
        p = self._param(name)
        raw = self._env.get("OCF_RESKEY_" + name)
        if raw is None or (raw == "" and p.type != "string"):
            value = p.default
        else:
            try:
                value = p.parse(raw)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        cache[name] = value
        return value

    def __setattr__(self, name, value):
        raise AttributeError("Params are read-only")

    def given(self, name):
        self._param(name)
        return ("OCF_RESKEY_" + name) in self._env

    def raw(self, name):
        return self._env.get("OCF_RESKEY_" + name)

    def default(self, name):
        """The declared default of parameter ``name`` (what a value that does not parse
        counts as, where an action must go on with a partly invalid configuration)."""
        return self._param(name).default

    def validate(self, local=True):
        """Parse every parameter and check what it names on this node; raise ConfigError
        (OCF_ERR_CONFIGURED) listing every problem at once, or InstalledError
        (OCF_ERR_INSTALLED) when the only problems are things this node lacks. Without
        ``local``, the values only: nothing on this node is looked at (validate-all at
        OCF_CHECK_LEVEL 0, see Context.checks_environment)."""
        problems, missing = [], []
        for p in self._spec.params:
            try:
                value = getattr(self, p.name)
            except ConfigError as e:
                problems.append(e.reason)
                continue
            if p.required and (value is None or value == ""):
                problems.append("required parameter %s is not set" % p.name)
            elif p.unsupported and self.given(p.name) and value != p.default \
                    and not (p.type == "string" and value == "" and not p.default):
                problems.append("parameter %s=%s is not supported by %s: %s"
                                % (p.name, shown(self.raw(p.name)), self._spec.name,
                                   p.unsupported))
            elif local:
                try:
                    p.check_here(value, self.raw(p.name) if self.given(p.name) else value)
                except NotHere as e:
                    missing.append(str(e))
                except ValueError as e:
                    problems.append(str(e))
        if problems:
            raise ConfigError("; ".join(problems + missing))
        if missing:
            raise InstalledError("; ".join(missing))

    def checked(self, name):
        """The value of one parameter with its node check run: ConfigError or
        InstalledError naming it."""
        value = getattr(self, name)
        p = self._param(name)
        try:
            p.check_here(value, self.raw(name) if self.given(name) else value)
        except NotHere as e:
            raise InstalledError(str(e)) from None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return value


class Action:
    __slots__ = ("name", "timeout", "interval", "depth", "role")

    def __init__(self, name, timeout, interval=None, depth=None, role=None):
        self.name = name
        self.timeout = timeout
        self.interval = interval
        self.depth = depth
        self.role = role


class AgentSpec:
    """Everything an agent declares: name, descriptions, parameters, actions."""

    def __init__(self, name, shortdesc, longdesc, params, actions, version=None):
        from vmceph import __version__
        self.name = name
        self.shortdesc = shortdesc
        self.longdesc = longdesc
        self.params = tuple(params)
        self.actions = tuple(actions)
        self.version = version or __version__
        self.param_index = {p.name: p for p in self.params}
        if len(self.param_index) != len(self.params):
            raise ValueError("duplicate parameter names in %s" % name)

    def action_timeout(self, name):
        """The advertised timeout of an action in seconds, or None."""
        for a in self.actions:
            if a.name == name:
                return parse_duration(a.timeout)
        return None


def parse_duration(text):
    """Seconds from a Pacemaker-style duration: '90s', '2min', '1500ms', '30'.
    ASCII digits with at most one decimal point and an optional unit; anything else
    ('nan', 'inf', '1e999', '-5s', '٣s') is a ValueError."""
    t = str(text).strip().lower()
    scale = 1.0
    for suffix, s in (("msec", 0.001), ("ms", 0.001), ("min", 60.0), ("m", 60.0),
                      ("sec", 1.0), ("s", 1.0), ("hr", 3600.0), ("h", 3600.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)].strip(), s
            break
    number = t.replace(".", "", 1)
    if not number or not number.isascii() or not number.isdigit() or len(number) > 15:
        raise ValueError("not a duration (e.g. 90s, 2min, 1500ms): %s" % shown(str(text)))
    return float(t) * scale


# ---------------------------------------------------------------------------- meta-data

# Reload without restart: why OCF 1.0's "reload" and not OCF 1.1's "reload-agent" (issue
# 13). paramdoc prints this into docs/parameters.md; the evidence is in the comment below.
RELOAD_DECISION = """\
Changing a parameter of a running resource does not restart it, except for the parameters \
marked "restarts" above. The agents advertise OCF 1.0's `reload` action and declare \
`<version>1.0</version>`; Pacemaker 2.1 then reloads an agent when only parameters with \
`unique="0"` changed, and stops and starts it when a `unique="1"` parameter changed. So \
every parameter that must restart the guest (RBDVirtualDomain: `config`, the domain's \
definition, and `hypervisor`, where the domain lives; CephHealth: `attribute`, whose old \
name the stop removes) is `unique="1"`, and every other one is reloaded. OCF 1.1's \
`reload-agent` with `reloadable="1"` parameters is not used: `ocf-tester` (resource-agents \
4.12) validates meta-data against `ra-api-1.dtd`, which allows neither the \
`reload-agent` action nor the `reloadable` attribute, and Pacemaker 2.1 honours \
`reload-agent` only for agents declaring OCF 1.1. Reload applies the new values without \
touching the guest: RBDVirtualDomain validates them as a start would (a wrong value fails \
the reload, and Pacemaker recovers the resource), re-applies the utilization parameters \
and reads every other parameter anew at each action; CephHealth checks Ceph and publishes \
its attributes with the new values at once. A successful reload appears in the CIB's \
operation history as a start with a new call id (Pacemaker records it so), with no stop \
before it, and in the cluster log as a `reload` operation. pcs 0.11 refuses a second \
resource with the same explicit value of a `unique="1"` parameter (`use --force to \
override`): leave `hypervisor` unset (libvirt's default URI) rather than repeating it."""

# Evidence for RELOAD_DECISION (checked on Debian 12, issue 13):
# - /usr/share/resource-agents/ra-api-1.dtd: <!ATTLIST action name (start|stop|recover|
#   monitor|restart|migrate_to|migrate_from|promote|demote|notify|status|reload|meta-data|
#   usage|methods|validate-all)> and <!ATTLIST parameter name required unique>: an action
#   named reload-agent or a reloadable attribute is a validity error for xmllint --valid,
#   which ocf-tester runs (its "Your agent produces meta-data which does not conform to
#   ra-api-1.dtd" check); ocf-tester also calls reload, and accepts 0 or 3 from it.
# - Pacemaker 2.1 controld_metadata.c: <version> >= 1.1 -> reload-agent is recognised,
#   else an advertised "reload" sets ra_supports_legacy_reload; controld_execd.c then
#   builds the op-force-restart list from the parameters with unique="1" (with OCF 1.1,
#   from those without reloadable="1"); the scheduler reloads when only the rest changed.
# - pcmk__create_history_xml: a successful reload/reload-agent is recorded as a start.
# - a successful reload replaces the controller's stop parameters (history_cache_update:
#   start, reload, reload-agent, monitor), so the next stop sees the reloaded values.
# - pcs 0.11.5 `pcs -f CIB resource create vm2 ... hypervisor=qemu:///system` after vm1
#   with the same value: "Error: Value 'qemu:///system' of option 'hypervisor' is not
#   unique across 'ocf:...:RBDVirtualDomain' resources ..., use --force to override".

DOCTYPE = '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'


def metadata_xml(spec):
    """Meta-data as bytes: valid against resource-agents' ra-api-1.dtd (with its DOCTYPE,
    which ocf-tester's ``xmllint --valid`` needs) and against OCF 1.1's ra-api-1.1.rng.
    Built with lxml, so every description is escaped correctly."""
    from lxml import etree  # only meta-data pays for lxml (15 ms to import here)

    root = etree.Element("resource-agent", name=spec.name, version=spec.version)
    etree.SubElement(root, "version").text = "1.0"
    _desc(root, "longdesc", spec.longdesc)
    _desc(root, "shortdesc", spec.shortdesc)
    params = etree.SubElement(root, "parameters")
    for p in spec.params:
        e = etree.SubElement(params, "parameter", name=p.name,
                             required="1" if p.required else "0",
                             unique="1" if p.unique else "0")
        _desc(e, "longdesc", param_longdesc(p))
        _desc(e, "shortdesc", p.shortdesc)
        content = etree.SubElement(e, "content", type=p.type)
        default = p.default_text()
        if default is not None:
            content.set("default", default)
    actions = etree.SubElement(root, "actions")
    for a in spec.actions:
        e = etree.SubElement(actions, "action", name=a.name, timeout=a.timeout)
        if a.interval is not None:
            e.set("interval", a.interval)
        if a.depth is not None:
            e.set("depth", str(a.depth))
        if a.role is not None:
            e.set("role", a.role)
    body = etree.tostring(root, pretty_print=True, encoding="unicode")
    return ('<?xml version="1.0"?>\n%s\n%s' % (DOCTYPE, body)).encode("utf-8")


def param_longdesc(p):
    text = p.longdesc.strip() or p.shortdesc
    if p.choices:
        text += "\nAccepted values: %s." % ", ".join(c if c else '"" (empty)' for c in p.choices)
    if p.range_text():
        text += "\nAccepted values: %s." % p.range_text()
    if p.unsupported:
        text += "\nNot supported by this agent (any value other than the default is refused " \
                "by validation): %s" % p.unsupported
    return text


def _desc(parent, tag, text):
    from lxml import etree
    e = etree.SubElement(parent, tag, lang="en")
    e.text = text
    return e


# ---------------------------------------------------------------------------- deadline

class Deadline:
    """Wall-clock budget of one action.

    Pacemaker kills an agent at ``OCF_RESKEY_CRM_meta_timeout`` (milliseconds); the agent
    must be done a little before that, so ``end`` keeps a safety margin: 10 % of the
    timeout, at least 1 s and at most 5 s.
    """

    def __init__(self, timeout_s, margin_s=None, clock=time.monotonic):
        self.clock = clock
        self.start = clock()
        self.timeout = float(timeout_s)
        if margin_s is None:
            margin_s = min(5.0, max(1.0, 0.1 * self.timeout))
        self.margin = min(margin_s, self.timeout / 2)
        self.end = self.start + self.timeout - self.margin
        self.note = None  # why the timeout is a default, for the log

    def remaining(self):
        return max(0.0, self.end - self.clock())

    def elapsed(self):
        return self.clock() - self.start

    def expired(self):
        return self.clock() >= self.end

    def at_most(self, seconds):
        """Seconds a single call may take: what is left, capped at ``seconds``."""
        return max(0.0, min(seconds, self.remaining()))


class Share:
    """A deadline for a side task: ``fraction`` of what is left of ``deadline`` now, and
    at most ``cap`` seconds. Fixed when made, like Deadline; anything that takes a
    deadline (CephSession, Cluster, Fencer) takes a Share."""

    def __init__(self, deadline, fraction=1.0, cap=None):
        self.clock = time.monotonic
        budget = deadline.remaining() * fraction
        self.timeout = budget if cap is None else min(cap, budget)
        self.end = self.clock() + self.timeout

    def remaining(self):
        return max(0.0, self.end - self.clock())

    def expired(self):
        return self.clock() >= self.end

    def at_most(self, seconds):
        return max(0.0, min(seconds, self.remaining()))


# Pacemaker keeps operation timeouts as C ints of milliseconds: nothing above this is one.
TIMEOUT_MAX_MS = 2 ** 31 - 1
DEFAULT_TIMEOUT_S = 20.0   # for an action the meta-data gives no timeout


def deadline_from_env(environ, default_timeout_s):
    """The action's Deadline from OCF_RESKEY_CRM_meta_timeout (ms, 1 to 2^31-1, ASCII
    digits). Missing, unparsable or out of range: the action's timeout advertised in the
    meta-data (``default_timeout_s``), else 20 s; ``Deadline.note`` then says so, and the
    dispatcher logs it (a 400-digit value crashed every action with OverflowError; an
    unparsable one silently became a long wait, issue 16)."""
    raw = environ.get("OCF_RESKEY_CRM_meta_timeout")
    default = default_timeout_s or DEFAULT_TIMEOUT_S
    if raw is None or raw == "":
        d = Deadline(default)
        d.note = "OCF_RESKEY_CRM_meta_timeout is not set: using %g s" % default
        return d
    if raw.isascii() and raw.isdigit() and len(raw) <= 10 and 0 < int(raw) <= TIMEOUT_MAX_MS:
        return Deadline(int(raw) / 1000.0)
    d = Deadline(default)
    d.note = ("OCF_RESKEY_CRM_meta_timeout=%s is not a timeout in milliseconds (1 to %d): "
              "using %g s" % (shown(raw), TIMEOUT_MAX_MS, default))
    return d


# ---------------------------------------------------------------------------- output
#
# Nothing an agent prints may be cut, forged or lost (issue 16):
# - a bare rados.Rados() sets O_NONBLOCK on the inherited stdout/stderr (fd flags 04001
#   seen after it), so a long line was cut at the pipe buffer and the exit reason landed
#   mid-line: every write clears O_NONBLOCK first and finishes short writes;
# - a value (a parameter, a domain's <name>) with a newline could print a line of its own,
#   even one starting with 'ocf-exit-reason:': every logged text is escaped;
# - 'meta-data >&-' and 'stop 2>&-' failed: closed standard descriptors are reopened on
#   /dev/null before anything else can take their numbers.

_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def escape(text):
    """``text`` on one line: C0/C1 controls, DEL, Unicode line separators and non-UTF-8
    bytes (surrogate escapes from the environment) become backslash escapes."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        o = ord(c)
        if o < 0x20 or 0x7F <= o < 0xA0:
            out.append(_ESCAPES.get(o) or "\\x%02x" % o)
        elif 0xDC80 <= o <= 0xDCFF:
            out.append("\\x%02x" % (o - 0xDC00))  # a byte that was not UTF-8
        elif 0xD800 <= o <= 0xDFFF or o in (0x2028, 0x2029):
            out.append("\\u%04x" % o)
        else:
            out.append(c)
    return "".join(out)


def _set_blocking(fd):
    import fcntl
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)


class FdWriter:
    """Writes text to a file descriptor so that nothing cuts it: O_NONBLOCK cleared before
    each write, short writes continued, EAGAIN waited for (5 s at most in all), a closed or
    broken descriptor given up silently (the action's result must not depend on it)."""

    def __init__(self, fd):
        self.fd = fd
        self.broken = False

    def write(self, text):
        self.write_bytes(text.encode("utf-8", "backslashreplace"))

    def write_bytes(self, data):
        if self.broken or not data:
            return
        view, waited = memoryview(data), 0.0
        try:
            _set_blocking(self.fd)
            while view:
                try:
                    n = os.write(self.fd, view)
                except (BlockingIOError, InterruptedError):
                    if waited >= 5.0:
                        raise OSError("descriptor %d not writable" % self.fd) from None
                    import select
                    select.select([], [self.fd], [], 0.1)
                    waited += 0.1
                    continue
                view = view[n:]
        except (OSError, ValueError):
            self.broken = True

    def flush(self):
        pass


def _ensure_std_fds():
    """Reopen closed descriptors 0, 1 and 2 on /dev/null: otherwise the next file the
    agent opens (a state file, libvirt's socket) gets number 1 or 2 and receives its
    output."""
    import fcntl
    for fd in (0, 1, 2):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
            continue
        except OSError:
            pass
        try:
            new = os.open(os.devnull, os.O_RDWR)
            if new != fd:
                os.dup2(new, fd)
                os.close(new)
        except OSError:
            continue
    # Python made these None when the descriptor was closed at its start: code that
    # prints must not fail on that
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            try:
                setattr(sys, name, open(fd, "w", closefd=False, errors="backslashreplace"))
            except OSError:
                pass


def open_append(path):
    """(fd, None) to append to ``path``, a regular file (created if missing), or
    (None, why not). The type is checked before opening (a FIFO without a reader blocks
    open(), issue 16: HA_LOGFILE naming a FIFO blocked every action) and after (it could
    have been replaced in between; O_NONBLOCK makes that open fail instead of block)."""
    import stat
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None, "is %s, not a regular file" % _kind_of(st.st_mode)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        return None, getattr(e, "strerror", None) or str(e)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK |
                     os.O_NOCTTY | os.O_CLOEXEC, 0o640)
    except (OSError, ValueError) as e:
        return None, getattr(e, "strerror", None) or str(e)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None, "is not a regular file"
        _set_blocking(fd)
    except OSError as e:
        os.close(fd)
        return None, e.strerror
    return fd, None


# ---------------------------------------------------------------------------- logging

_LEVELS = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "err": 3, "crit": 2}


class Log:
    """A logger with resource-agents' conventions.

    - stderr only when neither HA_LOGFACILITY nor HA_LOGFILE is set, as ha_log does
      (pacemaker-execd sets them and would otherwise log every line twice), or when the
      log file cannot be used and there is no syslog; "none" counts as no facility (the
      lines would be lost otherwise). The exit reason always goes to stderr;
    - HA_LOGFILE: appended to, in ha_log's format; HA_DEBUGLOG gets debug lines too; a
      path that is not a regular file is ignored with a warning (a FIFO would block);
    - HA_LOGFACILITY: syslog facility (unset, empty or "none" = no syslog);
    - HA_debug=1: debug messages are emitted (otherwise dropped).
    Every message is escaped (``escape``): one call, one line.
    No global state: one instance per agent run, created by the dispatcher.
    """

    def __init__(self, tag, environ=None, stream=None):
        env = os.environ if environ is None else environ
        self.tag = escape(tag)
        self.stream = FdWriter(2) if stream is None else stream
        self.debug_enabled = env.get("HA_debug", "0") not in ("", "0", "false", "no")
        self.logfile = env.get("HA_LOGFILE") or None
        self.debuglog = env.get("HA_DEBUGLOG") or None
        facility = env.get("HA_LOGFACILITY", "")
        self.facility = None if facility in ("", "none") else facility
        self._syslog = None
        self._fds = {}
        self.to_stream = self.facility is None and self.logfile is None
        self.trace = None  # a vmceph.trace.Tracer while OCF_TRACE_RA is on: every level

    def _file(self, path, variable):
        if path not in self._fds:
            fd, why = open_append(path)
            self._fds[path] = fd
            if fd is None:
                self._write_stream("%s: WARNING: %s=%s %s: not logging to it"
                                   % (self.tag, variable, shown(path), why))
        return self._fds[path]

    def _write_stream(self, line):
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _emit(self, level, msg):
        if self.trace is not None:
            self.trace.line("%s: %s" % (level.upper(), msg))
        if level == "debug" and not self.debug_enabled:
            return
        line = "%s: %s: %s" % (self.tag, level.upper(), escape(msg))
        if self.to_stream:
            self._write_stream(line)
        elif self.facility is None and self._file(self.logfile, "HA_LOGFILE") is None:
            self._write_stream(line)  # nowhere else to go
        stamp = None
        for path, variable in ((self.logfile, "HA_LOGFILE"),
                               (self.debuglog if level == "debug" else None, "HA_DEBUGLOG")):
            if not path:
                continue
            fd = self._file(path, variable)
            if fd is None:
                continue
            stamp = stamp or "%s %s" % (time.strftime("%b %d %H:%M:%S"),
                                        os.uname().nodename)
            FdWriter(fd).write("%s %s\n" % (stamp, line))
        if self.facility:
            self._to_syslog(level, line)

    def _to_syslog(self, level, line):
        import syslog
        if self._syslog is None:
            fac = getattr(syslog, "LOG_" + self.facility.upper(), syslog.LOG_DAEMON)
            syslog.openlog(self.tag.split("(")[0], syslog.LOG_PID, fac)
            self._syslog = syslog
        try:
            self._syslog.syslog(_LEVELS.get(level, 6), line)
        except (OSError, ValueError, UnicodeError):
            pass

    def debug(self, msg, *args):
        self._emit("debug", msg % args if args else msg)

    def info(self, msg, *args):
        self._emit("info", msg % args if args else msg)

    def warning(self, msg, *args):
        self._emit("warning", msg % args if args else msg)

    def error(self, msg, *args):
        self._emit("err", msg % args if args else msg)

    def close(self):
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


EXIT_REASON_MAX = 1000  # Pacemaker keeps 128 characters in the CIB; the log gets more


EXIT_REASON_PREFIX = "ocf-exit-reason:"


def exit_reason_prefix(environ):
    """The cookie Pacemaker looks for: ``OCF_EXIT_REASON_PREFIX`` when the manager sets it
    (ocf-shellfuncs' ocf_exit_reason honours it too), else ``ocf-exit-reason:``. Escaped:
    a newline in it must not start a line of its own."""
    return escape(environ.get("OCF_EXIT_REASON_PREFIX") or "") or EXIT_REASON_PREFIX


def exit_reason(msg, stream=None, prefix=EXIT_REASON_PREFIX):
    """Print the reason Pacemaker shows in ``crm_mon`` / ``pcs status`` next to a failure.
    Pacemaker takes the last ``ocf-exit-reason:`` line of stderr (``prefix``: see
    exit_reason_prefix), at most 128 characters are kept in the CIB, so the most specific
    facts come first. One line, escaped."""
    s = FdWriter(2) if stream is None else stream
    text = escape(" ".join(str(msg).split()))
    if len(text) > EXIT_REASON_MAX:
        text = text[:EXIT_REASON_MAX] + "..."
    try:
        s.write("%s%s\n" % (prefix, text))
        s.flush()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------- state files
#
# Where an agent remembers things between actions. HA_RSCTMP (cleared at boot) when it
# is usable, else /run/resource-agents; reads look in both. A HA_RSCTMP naming a file and a
# 100 KB instance name (file name too long) crashed both agents, stop included (issue 16):
# every helper here returns None / False instead of raising, and the caller decides
# whether the absence of state matters (it never does for stop).

STATE_DIR_FALLBACK = "/run/resource-agents"
_STATE_NAME_MAX = 200  # bytes; file systems allow 255, '.tmp' and margins need the rest


def state_file_name(prefix, instance, suffix):
    """``prefix + instance + suffix`` with '/' replaced; a name too long for a file system
    keeps a readable head and gets a hash of the whole instance name."""
    safe = instance.replace("/", "_")
    name = prefix + safe + suffix
    raw = os.fsencode(name)
    if len(raw) <= _STATE_NAME_MAX and "\0" not in name:
        return name
    import hashlib
    head = os.fsdecode(os.fsencode(safe.replace("\0", "_"))[:64])
    digest = hashlib.sha256(os.fsencode(instance)).hexdigest()[:32]
    return "%s%s-%s%s" % (prefix, head, digest, suffix)


def usable_state_dir(environ):
    """The first state directory that is a directory or can be created; the fallback if
    none is (its users then fail to write, which they must survive)."""
    import stat
    for d in state_dirs(environ):
        try:
            os.makedirs(d, exist_ok=True)
            if stat.S_ISDIR(os.stat(d).st_mode):
                return d
        except (OSError, ValueError):
            continue
    return STATE_DIR_FALLBACK


def state_dirs(environ):
    """The directories state may be in, the preferred first."""
    primary = environ.get("HA_RSCTMP") or ""
    dirs = [primary] if primary.startswith("/") else []
    if STATE_DIR_FALLBACK not in dirs:
        dirs.append(STATE_DIR_FALLBACK)
    return dirs


def write_state(ctx, name, text, dirs=None):
    """Write ``text`` to state file ``name`` in the first usable state directory (atomic
    replace); the path, or None when no directory is usable (logged). ``dirs``: other
    directories than the state directories (deadclients' reboot-proof record)."""
    import stat
    for d in dirs or state_dirs(ctx.env):
        path = os.path.join(d, name)
        tmp = path + ".tmp"
        try:
            os.makedirs(d, exist_ok=True)
            if not stat.S_ISDIR(os.stat(d).st_mode):
                raise NotADirectoryError("not a directory")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW |
                         os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
            try:
                FdWriter(fd).write(text)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            return path
        except (OSError, ValueError) as e:
            why = "not a directory" if isinstance(e, (FileExistsError, NotADirectoryError)) \
                else getattr(e, "strerror", None) or e
            ctx.log.warning("cannot write state file in %s: %s", shown(d), why)
    return None


def read_state(ctx, name, dirs=None):
    """Text of state file ``name`` from the first directory that has it, or None."""
    import stat
    for d in dirs or state_dirs(ctx.env):
        path = os.path.join(d, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, ValueError):
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            return os.read(fd, 65536).decode("utf-8", "surrogateescape")
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


def state_exists(ctx, name):
    for d in state_dirs(ctx.env):
        try:
            if os.path.isfile(os.path.join(d, name)):
                return True
        except (OSError, ValueError):
            pass
    return False


def remove_state(ctx, name, dirs=None):
    """Remove state file ``name`` from every state directory; never raises."""
    for d in dirs or state_dirs(ctx.env):
        try:
            os.unlink(os.path.join(d, name))
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------------------- dispatch

def _ms_or_none(raw):
    """Strict ASCII decimal milliseconds/level, or None."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 10:
        return int(raw)
    return None


class Context:
    """What an action needs to know about its invocation."""

    def __init__(self, spec, action, environ, log, deadline):
        self.spec = spec
        self.action = action
        self.env = environ
        self.log = log
        self.deadline = deadline
        self.params = Params(spec, environ)
        self.instance = environ.get("OCF_RESOURCE_INSTANCE") or spec.name
        # Problems of the OCF environment itself (not of a parameter): a monitor must not
        # guess (an unparsable interval was silently a probe, an unparsable depth 0).
        self.env_problems = []
        raw = environ.get("OCF_RESKEY_CRM_meta_interval", "0") or "0"
        self.interval_ms = _ms_or_none(raw)
        if self.interval_ms is None:
            self.env_problems.append("OCF_RESKEY_CRM_meta_interval=%s is not a number of "
                                     "milliseconds" % shown(raw))
        # Pacemaker sets OCF_CHECK_LEVEL itself; other managers pass the operation's
        # attribute as OCF_RESKEY_OCF_CHECK_LEVEL, which ocf-shellfuncs also reads
        raw = environ.get("OCF_CHECK_LEVEL") or environ.get("OCF_RESKEY_OCF_CHECK_LEVEL") or ""
        self.check_level_given = raw != "" and _ms_or_none(raw) is not None
        raw = raw or "0"
        self.depth = _ms_or_none(raw)
        if self.depth is None:
            self.env_problems.append("OCF_CHECK_LEVEL=%s is not a check depth (0, 10, 20)"
                                     % shown(raw))
            self.depth = 0

    @property
    def is_probe(self):
        """A probe is a monitor with interval 0 (Pacemaker's "is this running here?").
        An unparsable interval is not a probe: a probe may answer "not running" from
        what it cannot see, a recurring monitor may not."""
        return self.action in ("monitor", "status") and self.interval_ms == 0

    @property
    def checks_environment(self):
        """Whether validate-all looks at this node (files, programs, modules, Ceph, libvirt,
        Pacemaker). OCF 1.1, "Check Levels": at OCF_CHECK_LEVEL 0 validate-all checks the
        parameters' syntax and consistency only, "so tools can validate parameters even if
        running on a node that will not run the agent" (crm_resource --validate=0); 10 may
        add the local environment; a level in between means the next lower one. Unset (or
        unparsable), the agent chooses: the full check, as ocf-tester and an administrator
        running validate-all by hand expect."""
        return not (self.check_level_given and self.depth < 10)

    @property
    def state_dir(self):
        """Where the agent prefers to remember things between actions (see state_dirs)."""
        return state_dirs(self.env)[0]

    def meta(self, name):
        return self.env.get("OCF_RESKEY_CRM_meta_" + name)

    @property
    def node_name(self):
        """This node's name as Pacemaker knows it, when Pacemaker says so."""
        return self.meta("on_node") or None


STANDARD_ACTIONS = ("start", "stop", "monitor", "status", "migrate_to", "migrate_from",
                    "validate-all", "meta-data", "reload", "notify", "promote", "demote")


def usage(spec):
    names = [a.name for a in spec.actions]
    return "usage: %s {%s}" % (spec.name, "|".join(names))


def _text_writer(stream, fd):
    return FdWriter(fd) if stream is None else stream


def run(agent, argv=None, environ=None, stdout=None, stderr=None):
    """Run one OCF action of ``agent`` and return its exit code.

    ``agent`` provides ``spec`` and a method per action (``start``, ``stop``, ``monitor``,
    ``migrate_to``, ``migrate_from``, ``validate``), each taking a Context and returning an
    exit code or raising OCFError. ``validate(ctx)`` checks the environment; the dispatcher
    applies the OCF rules around it (see module doc). Unexpected exceptions are bugs: they
    are logged with their traceback and answered with OCF_ERR_GENERIC. Whatever happens,
    the exit reason of a failure is the last line the agent prints.
    """
    if stdout is None or stderr is None:
        _ensure_std_fds()
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    out = _text_writer(stdout, 1)
    err = _text_writer(stderr, 2)
    spec = agent.spec
    prefix = exit_reason_prefix(environ)
    if len(argv) < 2:
        err.write(usage(spec) + "\n")
        exit_reason("%s needs an action argument" % spec.name, err, prefix)
        return OCF_ERR_ARGS
    # "the RA shall ignore all other arguments" (OCF resource agent API, Execution syntax:
    # room for extensions); before issue 13 they were an OCF_ERR_ARGS
    action = argv[1]
    if action in ("meta-data", "metadata"):
        data = metadata_xml(spec)
        if hasattr(out, "write_bytes"):
            out.write_bytes(data)
        elif hasattr(out, "buffer"):
            out.buffer.write(data)
        else:
            out.write(data.decode("utf-8"))
        try:
            out.flush()
        except (OSError, ValueError):
            pass
        return OCF_SUCCESS
    if action in ("usage", "help", "--help", "-h"):
        out.write(usage(spec) + "\n")
        return OCF_SUCCESS
    declared = {a.name for a in spec.actions}
    if action == "reload-agent" and "reload" in declared:
        # Pacemaker 2.1's controller asks for reload-agent when it has no cached meta-data
        # for the agent (controld_execd.c maps the scheduled reload to "reload" only for an
        # agent whose cached meta-data advertises the legacy action): the same thing here
        action = "reload"
    if action not in declared:
        exit_reason("action %s is not implemented by %s" % (shown(action), spec.name), err,
                    prefix)
        return OCF_ERR_UNIMPLEMENTED
    instance = environ.get("OCF_RESOURCE_INSTANCE", "-")
    if len(instance) > 80:
        instance = instance[:80] + "..."
    log = Log("%s(%s)[%d]" % (spec.name, instance, os.getpid()), environ, err)
    tracer = None
    if "OCF_TRACE_RA" in environ or "OCF_RESKEY_trace_ra" in environ:
        from vmceph import trace   # only a traced action pays for it
        if trace.wanted(environ):
            tracer = trace.Tracer.open(environ, spec.name, action, err, log.warning)
            if tracer is not None:
                tracer.start(environ, argv)
                log.trace = tracer
    reason = None
    try:
        timeout_name = "monitor" if action == "status" else action
        deadline = deadline_from_env(environ, spec.action_timeout(timeout_name))
        if deadline.note:
            (log.warning if environ.get("OCF_RESKEY_CRM_meta_timeout") else log.info)(
                "%s: %s (the advertised %s timeout)", action, deadline.note, timeout_name)
        ctx = Context(spec, action, environ, log, deadline)
        rc = _dispatch(agent, ctx)
    except OCFError as e:
        log.debug("%s: %s (%s)", action, e.reason, CODE_NAMES.get(e.code, e.code))
        reason, rc = e.reason, e.code
    except Exception:  # a bug: keep the traceback where an administrator will find it
        import traceback
        for line in traceback.format_exc().rstrip().splitlines():
            log.error(line)
        reason = ("internal error in %s %s (traceback in the cluster log); please report it"
                  % (spec.name, action))
        rc = OCF_ERR_GENERIC
    try:
        log.debug("%s finished with %s", action, CODE_NAMES.get(rc, rc))
    finally:
        log.close()
    if reason is None and rc not in (OCF_SUCCESS, OCF_NOT_RUNNING):
        reason = "%s %s failed (%s)" % (spec.name, action, CODE_NAMES.get(rc, rc))
    if tracer is not None:
        tracer.finish(rc, CODE_NAMES.get(rc, rc), reason)
    if reason is not None:
        exit_reason(reason, err, prefix)
    return rc


def _dispatch(agent, ctx):
    action = ctx.action
    if action == "validate-all":
        agent.validate(ctx)
        return OCF_SUCCESS
    method = getattr(agent, action.replace("-", "_") if action != "status" else "monitor")
    try:
        if ctx.env_problems and action in ("monitor", "status") and not ctx.is_probe:
            raise ConfigError("; ".join(ctx.env_problems))
        agent.validate(ctx)
    except OCFError as e:
        # ocf-rarun's rules: a stop or a probe must not fail just because this node cannot
        # run the resource (a missing file, a bad value): the agent is asked to answer from
        # what it can still observe. Everything else fails with the real error.
        if action == "stop" or ctx.is_probe:
            return agent.degraded(ctx, e)
        raise
    return method(ctx)
