"""Small helpers shared by the lab: bounded subprocess calls, a step logger, polling.

Every external command goes through run_cmd() so that nothing the lab does can hang
forever: a missing timeout is a bug here, not a convenience.
"""

import os
import subprocess
import sys
import time

# What a node's processes get as PATH: Debian's own tools first (a pyenv or venv earlier
# on the caller's PATH has no rados/rbd/libvirt bindings).
NODE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON = "/usr/bin/python3"


class LabError(RuntimeError):
    """The lab could not do what was asked; the message carries the useful log lines."""


class CommandError(LabError, subprocess.CalledProcessError):
    """A command exited non-zero. Also a CalledProcessError: returncode, cmd, stdout, stderr."""

    def __init__(self, returncode, cmd, stdout, stderr):
        subprocess.CalledProcessError.__init__(self, returncode, cmd, stdout, stderr)
        LabError.__init__(self, f"exit {returncode}: {' '.join(map(str, cmd))}\n"
                                f"{stdout or ''}{stderr or ''}".rstrip())

    def __str__(self):
        return self.args[0]


class CommandTimeout(LabError):
    """A command did not finish within its timeout (it was killed)."""


def base_env(extra=None):
    """A clean, predictable environment for commands run by the lab."""
    env = {"PATH": NODE_PATH, "HOME": "/root", "LC_ALL": "C", "LANG": "C"}
    if extra:
        env.update(extra)
    return env


def run_cmd(argv, timeout, input=None, env=None, check=True, cwd=None):
    """subprocess.run in text mode with a mandatory timeout; failures raise with the output."""
    try:
        proc = subprocess.run(argv, input=input, env=env if env is not None else base_env(),
                              cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise CommandTimeout(f"timed out after {timeout}s: {' '.join(map(str, argv))}\n"
                             f"{_text(exc.stdout)}{_text(exc.stderr)}") from None
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def wait_until(predicate, timeout, interval=0.2, what="condition"):
    """Poll predicate() until it returns a truthy value; return it, or raise LabError.

    Exceptions from the predicate count as "not yet" (a daemon that is still starting
    makes its client fail); the last one is reported if the wait times out.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f": last error: {last_error}" if last_error else ""
            raise LabError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


class StepLog:
    """Timestamped progress lines "[ 12.3s] ...", to stderr (if verbose) and to a file."""

    def __init__(self, path=None, verbose=True):
        self.t0 = time.monotonic()
        self.path = path
        self.verbose = verbose

    def restart_clock(self):
        self.t0 = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.t0

    def __call__(self, message):
        line = f"[{self.elapsed():6.1f}s] {message}"
        if self.verbose:
            print(line, file=sys.stderr, flush=True)
        if self.path:
            try:
                with open(self.path, "a") as f:
                    f.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            except OSError:
                pass  # the state dir may just have been removed by down()


def tail(path, lines=40):
    """The last lines of a text file, or '' if it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def write_file(path, text, mode=0o644):
    """Write text atomically enough for config files (create parents, set mode)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


# What a lab with Pacemaker needs on this machine (`make deps` installs it).
PACEMAKER_LAB_TOOLS = ("ceph-mon", "ceph-osd", "libvirtd", "qemu-system-x86_64", "corosync",
                       "pacemakerd", "pcs", "crm")


def marked(path, begin, end):
    """The block of the file at path from the line ``begin`` to ``end`` (markers included),
    or '' when the file or a marker is missing."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    if begin not in text or end not in text:
        return ""
    return text[text.index(begin):text.index(end) + len(end)]


def replace_marked(path, begin, end, block):
    """Put ``block`` (which starts with ``begin`` and ends with ``end``) in place of the
    file's block between those markers, or at its end when it has none; atomically, so a
    generated report is never half written."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    block = block.rstrip("\n")
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def pacemaker_lab_missing(extra=()):
    """Why a Pacemaker lab cannot run here (for a loud skip), or None; ``extra``: more
    programs the caller needs."""
    import shutil
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, bridges)"
    for tool in PACEMAKER_LAB_TOOLS + tuple(extra):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            return f"{tool} missing: run `make deps`"
    return None
