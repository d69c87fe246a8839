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


class ArgsError(OCFError):
    code = OCF_ERR_ARGS


class PermError(OCFError):
    code = OCF_ERR_PERM


class InstalledError(OCFError):
    """Something this node lacks (a file, a program, a module): another node may do better."""
    code = OCF_ERR_INSTALLED


class ConfigError(OCFError):
    """The resource's configuration is wrong: no node can do better."""
    code = OCF_ERR_CONFIGURED


class NotRunning(OCFError):
    code = OCF_NOT_RUNNING


# ---------------------------------------------------------------------------- parameters

def _parse_bool(text):
    # Pacemaker's own crm_is_true() accepts these spellings; so do the shell agents.
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on", "y"):
        return True
    if t in ("0", "false", "no", "off", "n", ""):
        return False
    raise ValueError("expected a boolean (true/false, yes/no, 1/0)")


def _parse_int(text):
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("expected an integer") from None


_PARSERS = {"string": str, "integer": _parse_int, "boolean": _parse_bool}


class Param:
    """One agent parameter, declared once.

    ``choices``: the accepted values of a string (OCF 1.0 has no ``select`` type and
    ocf-tester validates against the 1.0 DTD, so the choices live in the description and
    are enforced here). ``check``: an optional callable(value) raising ValueError.
    ``inherited``: the parameter comes from ocf:heartbeat:VirtualDomain (documentation
    groups them). ``unsupported``: a reason; the parameter is accepted but any non-default
    value is refused by validation with that reason (never silently ignored).
    """

    __slots__ = ("name", "type", "default", "required", "unique", "shortdesc", "longdesc",
                 "choices", "check", "inherited", "unsupported", "advanced")

    def __init__(self, name, type="string", default=None, required=False, unique=False,
                 shortdesc="", longdesc="", choices=None, check=None, inherited=False,
                 unsupported=None, advanced=False):
        if type not in _PARSERS:
            raise ValueError("unknown parameter type %r" % type)
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

    def default_text(self):
        """The default as meta-data shows it (booleans as true/false), or None."""
        if self.default is None:
            return None
        if self.type == "boolean":
            return "true" if self.default else "false"
        return str(self.default)

    def parse(self, text):
        """Typed value of ``text``; ValueError with a message naming the parameter."""
        try:
            value = _PARSERS[self.type](text)
        except ValueError as e:
            raise ValueError("parameter %s=%r: %s" % (self.name, text, e)) from None
        if self.choices is not None and value not in self.choices:
            raise ValueError("parameter %s=%r: must be one of %s"
                             % (self.name, text, ", ".join(repr(c) for c in self.choices)))
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as e:
                raise ValueError("parameter %s=%r: %s" % (self.name, text, e)) from None
        return value


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

    def validate(self):
        """Parse every parameter; raise ConfigError listing every problem at once."""
        problems = []
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
                problems.append("parameter %s=%r is not supported by %s: %s"
                                % (p.name, self.raw(p.name), self._spec.name, p.unsupported))
        if problems:
            raise ConfigError("; ".join(problems))

    def as_dict(self):
        return {p.name: getattr(self, p.name) for p in self._spec.params}


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
    """Seconds from a Pacemaker-style duration: '90s', '2min', '1500ms', '30'."""
    t = str(text).strip().lower()
    for suffix, scale in (("ms", 0.001), ("msec", 0.001), ("min", 60.0), ("m", 60.0),
                          ("sec", 1.0), ("s", 1.0), ("h", 3600.0), ("hr", 3600.0)):
        if t.endswith(suffix) and t[: -len(suffix)].strip().replace(".", "", 1).isdigit():
            return float(t[: -len(suffix)]) * scale
    return float(t)


# ---------------------------------------------------------------------------- meta-data

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

    def remaining(self):
        return max(0.0, self.end - self.clock())

    def elapsed(self):
        return self.clock() - self.start

    def expired(self):
        return self.clock() >= self.end

    def at_most(self, seconds):
        """Seconds a single call may take: what is left, capped at ``seconds``."""
        return max(0.0, min(seconds, self.remaining()))


def deadline_from_env(environ, default_timeout_s):
    raw = environ.get("OCF_RESKEY_CRM_meta_timeout")
    try:
        ms = int(raw)
        if ms > 0:
            return Deadline(ms / 1000.0)
    except (TypeError, ValueError):
        pass
    return Deadline(default_timeout_s or 20.0)


# ---------------------------------------------------------------------------- logging

_LEVELS = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "err": 3, "crit": 2}


class Log:
    """A logger with resource-agents' conventions.

    - stderr, always: pacemaker-execd records an agent's stderr in its own log;
    - HA_LOGFILE: appended to, in ha_log's format; HA_DEBUGLOG gets debug lines too;
    - HA_LOGFACILITY: syslog facility (unset, empty or "none" = no syslog);
    - HA_debug=1: debug messages are emitted (otherwise dropped).
    No global state: one instance per agent run, created by the dispatcher.
    """

    def __init__(self, tag, environ=None, stream=None):
        env = os.environ if environ is None else environ
        self.tag = tag
        self.stream = sys.stderr if stream is None else stream
        self.debug_enabled = env.get("HA_debug", "0") not in ("", "0", "false", "no")
        self.logfile = env.get("HA_LOGFILE") or None
        self.debuglog = env.get("HA_DEBUGLOG") or None
        facility = env.get("HA_LOGFACILITY", "")
        self.facility = None if facility in ("", "none") else facility
        self._syslog = None

    def _emit(self, level, msg):
        if level == "debug" and not self.debug_enabled:
            return
        line = "%s: %s: %s" % (self.tag, level.upper(), msg)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        stamp = time.strftime("%b %d %H:%M:%S")
        for path in (self.logfile, self.debuglog if level == "debug" else None):
            if path:
                try:
                    with open(path, "a") as f:
                        f.write("%s %s %s\n" % (stamp, os.uname().nodename, line))
                except OSError:
                    pass
        if self.facility:
            self._to_syslog(level, line)

    def _to_syslog(self, level, line):
        import syslog
        if self._syslog is None:
            fac = getattr(syslog, "LOG_" + self.facility.upper(), syslog.LOG_DAEMON)
            syslog.openlog(self.tag.split("(")[0], syslog.LOG_PID, fac)
            self._syslog = syslog
        self._syslog.syslog(_LEVELS.get(level, 6), line)

    def debug(self, msg, *args):
        self._emit("debug", msg % args if args else msg)

    def info(self, msg, *args):
        self._emit("info", msg % args if args else msg)

    def warning(self, msg, *args):
        self._emit("warning", msg % args if args else msg)

    def error(self, msg, *args):
        self._emit("err", msg % args if args else msg)


def exit_reason(msg, stream=None):
    """Print the reason Pacemaker shows in ``crm_mon`` / ``pcs status`` next to a failure.
    Pacemaker takes the last ``ocf-exit-reason:`` line of stderr, at most 128 characters are
    kept in the CIB, so the most specific facts come first."""
    s = sys.stderr if stream is None else stream
    try:
        s.write("ocf-exit-reason:%s\n" % " ".join(str(msg).split()))
        s.flush()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------- dispatch

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
        try:
            self.interval_ms = int(environ.get("OCF_RESKEY_CRM_meta_interval", "0") or 0)
        except ValueError:
            self.interval_ms = 0
        try:
            self.depth = int(environ.get("OCF_CHECK_LEVEL", "0") or 0)
        except ValueError:
            self.depth = 0

    @property
    def is_probe(self):
        """A probe is a monitor with interval 0 (Pacemaker's "is this running here?")."""
        return self.action in ("monitor", "status") and self.interval_ms == 0

    @property
    def state_dir(self):
        """Where the agent remembers things between actions (HA_RSCTMP, cleared at boot)."""
        return self.env.get("HA_RSCTMP") or "/run/resource-agents"

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


def run(agent, argv=None, environ=None, stdout=None, stderr=None):
    """Run one OCF action of ``agent`` and return its exit code.

    ``agent`` provides ``spec`` and a method per action (``start``, ``stop``, ``monitor``,
    ``migrate_to``, ``migrate_from``, ``validate``), each taking a Context and returning an
    exit code or raising OCFError. ``validate(ctx)`` checks the environment; the dispatcher
    applies the OCF rules around it (see module doc). Unexpected exceptions are bugs: they
    are logged with their traceback and answered with OCF_ERR_GENERIC.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    spec = agent.spec
    if len(argv) != 2:
        err.write(usage(spec) + "\n")
        return OCF_ERR_ARGS
    action = argv[1]
    if action in ("meta-data", "metadata"):
        data = metadata_xml(spec)
        if hasattr(out, "buffer"):
            out.buffer.write(data)
        else:
            out.write(data.decode("utf-8"))
        out.flush()
        return OCF_SUCCESS
    if action in ("usage", "help", "--help", "-h"):
        out.write(usage(spec) + "\n")
        return OCF_SUCCESS
    declared = {a.name for a in spec.actions}
    if action not in declared:
        exit_reason("action %r is not implemented by %s" % (action, spec.name), err)
        return OCF_ERR_UNIMPLEMENTED
    tag = "%s(%s)[%d]" % (spec.name, environ.get("OCF_RESOURCE_INSTANCE", "-"), os.getpid())
    log = Log(tag, environ, err)
    timeout_name = "monitor" if action == "status" else action
    deadline = deadline_from_env(environ, spec.action_timeout(timeout_name))
    ctx = Context(spec, action, environ, log, deadline)
    try:
        rc = _dispatch(agent, ctx)
    except OCFError as e:
        log.debug("%s: %s (%s)", action, e.reason, CODE_NAMES.get(e.code, e.code))
        exit_reason(e.reason, err)
        rc = e.code
    except Exception:  # a bug: keep the traceback where an administrator will find it
        import traceback
        for line in traceback.format_exc().rstrip().splitlines():
            log.error(line)
        exit_reason("internal error in %s %s (traceback in the cluster log); please report it"
                    % (spec.name, action), err)
        rc = OCF_ERR_GENERIC
    log.debug("%s finished in %.3f s with %s", action, deadline.elapsed(),
              CODE_NAMES.get(rc, rc))
    return rc


def _dispatch(agent, ctx):
    action = ctx.action
    if action == "validate-all":
        agent.validate(ctx)
        return OCF_SUCCESS
    method = getattr(agent, action.replace("-", "_") if action != "status" else "monitor")
    try:
        agent.validate(ctx)
    except OCFError as e:
        # ocf-rarun's rules: a stop or a probe must not fail just because this node cannot
        # run the resource (a missing file, a bad value): the agent is asked to answer from
        # what it can still observe. Everything else fails with the real error.
        if action == "stop" or ctx.is_probe:
            return agent.degraded(ctx, e)
        raise
    return method(ctx)
