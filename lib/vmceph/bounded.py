"""Bounding calls that have no timeout of their own, and running programs with one.

``call(fn, timeout)`` runs ``fn`` in a daemon thread and stops waiting at ``timeout``:
the call is abandoned (a C library call cannot be interrupted), the caller gets
``Timeout`` and the process exits at the end of the action anyway. This is the last line
of defence: Ceph calls are first bounded by Ceph's own settings (ceph.py), libvirt calls
by libvirt's keepalive; this makes sure nothing outlives the action's deadline.

``command(argv, timeout)``: every program the agents run goes through here (arguments as
a list, never a shell; output captured; killed at the timeout).
"""

import threading


class Timeout(Exception):
    def __init__(self, what, seconds):
        super().__init__("%s did not answer within %.1f s" % (what, seconds))
        self.what = what
        self.seconds = seconds


class Background:
    """``fn`` running in a daemon thread; ``result(timeout)`` waits for it at most that long
    (then raises Timeout; the call is abandoned) and returns its value or raises its error."""

    def __init__(self, fn, what="call"):
        self.what = what
        self._box = {}
        self._thread = threading.Thread(target=self._run, args=(fn,), name="bounded:" + what,
                                        daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._box["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            self._box["error"] = e

    def result(self, timeout):
        self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            raise Timeout(self.what, timeout)
        if "error" in self._box:
            raise self._box["error"]
        return self._box.get("value")


def call(fn, timeout, what="call"):
    if timeout <= 0:
        raise Timeout(what, 0.0)
    return Background(fn, what).result(timeout)


class CommandResult:
    __slots__ = ("argv", "rc", "out", "err")

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def __repr__(self):
        return "CommandResult(%r, rc=%r)" % (self.argv, self.rc)


def command(argv, timeout, input=None, env=None, log=None):
    """Run ``argv``; return CommandResult. Raises Timeout (process killed) or
    FileNotFoundError (program missing)."""
    import subprocess  # not at module level: the monitor hot path never runs a program (6 ms)
    if timeout <= 0:
        raise Timeout(argv[0], 0.0)
    if log is not None:
        log.debug("run: %s", " ".join(argv))
    try:
        p = subprocess.run(argv, input=input, capture_output=True, text=True,
                           timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise Timeout(" ".join(argv[:3]), timeout) from None
    if log is not None and p.returncode != 0:
        log.debug("%s: rc=%d %s", argv[0], p.returncode, (p.stderr or "").strip()[:300])
    return CommandResult(argv, p.returncode, p.stdout, p.stderr)
