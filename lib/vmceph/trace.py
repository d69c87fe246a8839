"""Tracing of one agent action: the Python counterpart of ocf-shellfuncs' OCF_TRACE_RA.

``crm resource trace RSC [OP]`` sets the instance attribute ``trace_ra=1`` on the resource
or its operation; Pacemaker passes it as ``OCF_RESKEY_trace_ra``. A shell agent then runs
under ``set -x`` and its trace lands in a file (resource-agents 4.12, ocf-shellfuncs:
ocf_start_trace / ocf_default_trace_dest). The same variables mean the same here:

- ``OCF_TRACE_RA`` (else ``OCF_RESKEY_trace_ra``): tracing on when ocf_is_true would say so
  (1, yes, true, on, ja, in the spellings ocf_is_true accepts);
- ``OCF_TRACE_FILE``: a descriptor 3 to 9 open for writing (the caller collects it), or an
  absolute path with at least two components (``/*/*``); anything else is warned about
  and the default is used;
- default: ``$OCF_RESKEY_trace_dir/<type>/<instance>.<action>.<YYYY-MM-DD.HH:MM:SS>``,
  ``trace_dir`` defaulting to ``$HA_VARLIB/trace_ra`` (HA_VARLIB: /var/lib/heartbeat), which
  is where ``crm resource trace`` tells the administrator to look. No default file when
  standard input is a terminal (someone runs the agent by hand and sees the trace on
  stderr) or when the instance is unknown, as in ocf-shellfuncs.

What is traced, as ``set -x`` would show it for a shell agent: the sorted environment
first, then each call of a vmceph function with its time and line (sys.setprofile), every
log message at every level (debug included, whatever HA_debug says), and the exit code and
exit reason. Loaded only when tracing is on: the monitor hot path does not import it.
"""

import os
import sys
import time

DEFAULT_VARLIB = "/var/lib/heartbeat"

# Calls that are the trace's or the log's own plumbing: tracing them would double every
# log line with a dozen calls of no interest.
_QUIET = {
    "vmceph.ocf": {"_emit", "_write_stream", "write", "write_bytes", "flush", "escape",
                   "_set_blocking", "_file", "debug", "info", "warning", "error", "shown",
                   "_to_syslog", "close", "__getattr__", "_param"},
}


def wanted(environ):
    """Tracing requested (OCF_TRACE_RA, else OCF_RESKEY_trace_ra, read as ocf_is_true)."""
    from vmceph.ocf import BOOL_TRUE
    value = environ.get("OCF_TRACE_RA")
    if not value:
        value = environ.get("OCF_RESKEY_trace_ra", "")
    return value in BOOL_TRUE


def destination(environ, type_name, action, now=None, interactive=False):
    """Where the trace goes: (kind, target, warning) with kind "fd" (target: the number),
    "file" (target: the path) or "stderr" (target: None). Pure: ocf-shellfuncs' rules."""
    warning = None
    raw = environ.get("OCF_TRACE_FILE", "")
    if len(raw) == 1 and raw in "3456789":
        return "fd", int(raw), None
    if raw in ("/dev/stderr", "/proc/self/fd/2"):
        # crm_resource --validate/--force-* sets this so the trace shows on the console
        return "stderr", None, None
    if raw.startswith("/") and "/" in raw[1:]:   # the shell's case pattern /*/*
        return "file", raw, None
    if raw:
        warning = ("OCF_TRACE_FILE must be a descriptor (3 to 9) open for writing or an "
                   "absolute file path; %r is neither: using the default" % raw)
    instance = environ.get("OCF_RESOURCE_INSTANCE", "")
    rtype = environ.get("OCF_RESOURCE_TYPE") or type_name
    if interactive or not (instance and rtype and action):
        return "stderr", None, warning
    varlib = environ.get("HA_VARLIB") or DEFAULT_VARLIB
    tdir = environ.get("OCF_RESKEY_trace_dir") or os.path.join(varlib, "trace_ra")
    stamp = time.strftime("%Y-%m-%d.%H:%M:%S", time.localtime(now))
    name = "%s.%s.%s" % (instance.replace("/", "_"), action, stamp)
    return "file", os.path.join(tdir, rtype.replace("/", "_"), name), warning


class Tracer:
    """One action's trace. ``open`` picks the destination; ``line`` writes one line;
    ``finish`` writes the result and stops the profiler. Never raises: tracing must not
    change what the action does."""

    def __init__(self, writer, where, owned_fd=None):
        self.writer = writer
        self.where = where
        self._fd = owned_fd
        self._t0 = time.monotonic()

    @classmethod
    def open(cls, environ, type_name, action, log_stream, warn):
        from vmceph.ocf import FdWriter, open_append, shown
        try:
            interactive = os.isatty(0)
        except OSError:
            interactive = False
        kind, target, warning = destination(environ, type_name, action,
                                            interactive=interactive)
        if warning:
            warn(warning)
        if kind == "fd":
            import fcntl
            try:
                mode = fcntl.fcntl(target, fcntl.F_GETFL) & os.O_ACCMODE
            except OSError:
                mode = None
            if mode not in (os.O_WRONLY, os.O_RDWR):
                warn("OCF_TRACE_FILE=%d is not a descriptor open for writing: no trace"
                     % target)
                return None
            return cls(FdWriter(target), "descriptor %d" % target)
        if kind == "stderr":
            return cls(log_stream, "stderr")
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        except OSError as e:
            warn("%s not writable (%s), trace not going to happen"
                 % (shown(target), e.strerror or e))
            return None
        fd, why = open_append(target)
        if fd is None:
            warn("%s not writable (%s), trace not going to happen" % (shown(target), why))
            return None
        return cls(FdWriter(fd), target, owned_fd=fd)

    def line(self, text):
        from vmceph.ocf import escape
        try:
            self.writer.write("+ %8.3f %s\n" % (time.monotonic() - self._t0, escape(text)))
        except (OSError, ValueError):
            pass

    def start(self, environ, argv):
        from vmceph.ocf import escape
        try:
            self.writer.write("# vmceph trace: %s, pid %d, %s\n" % (
                " ".join(escape(a) for a in argv), os.getpid(),
                time.strftime("%Y-%m-%d %H:%M:%S")))
            for key in sorted(environ):
                self.writer.write("# env %s=%s\n" % (escape(key), escape(environ[key])))
        except (OSError, ValueError):
            pass
        sys.setprofile(self._profile)

    def _profile(self, frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("vmceph") or module == __name__:
            return
        code = frame.f_code
        # functions only: not module and class bodies run by an import (no CO_NEWLOCALS,
        # 0x02), nor generator expressions and comprehensions (<genexpr>, <listcomp>)
        if not code.co_flags & 0x02 or code.co_name.startswith("<") or \
                code.co_name in _QUIET.get(module, ()):
            return
        self.line("%s.%s:%d" % (module[len("vmceph."):] or module, code.co_name,
                                frame.f_lineno))

    def finish(self, rc, code_name, reason):
        sys.setprofile(None)
        self.line("exit %s (%s)%s" % (rc, code_name,
                                      ": %s" % reason if reason else ""))
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
