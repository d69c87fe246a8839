"""Whole-process runs of the agents and of ``vmceph``, and the invariants every run must keep.

Each run is a fresh process with an ``env -i``-style environment (only what Pacemaker would
set, plus what the case adds), libvirt's in-process ``test:///default`` driver as the
hypervisor (no daemon: every process sees a fresh driver with one running domain, ``test``)
and a ceph.conf whose monitor address answers nothing. A subprocess timeout is the block
detector. Values are bytes, so that non-UTF-8 reaches the agent exactly as Pacemaker would
pass it.

The invariants (issue 16):
- no Python traceback in stdout or stderr;
- no run longer than SLOW_S (and none blocks: BLOCK_S kills it);
- an exit code OCF defines (0-7; for vmceph 0, 1, 2);
- every failure (1-6) has an ``ocf-exit-reason:`` line, it is the last line of stderr and
  the only one; a success prints none (a value cannot forge one);
- stop answers 0 when no domain of the resource runs.
"""

import os
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENTS = {name: os.path.join(ROOT, "agents", name) for name in ("RBDVirtualDomain",
                                                                  "CephHealth")}
PYTHON = "/usr/bin/python3"
BLOCK_S = 30.0  # the block detector: a run still going then is killed and reported
SLOW_S = 12.0   # "a few seconds": every timeout the fuzz uses is at most 3 s

BASE_ENV = {
    b"PATH": b"/usr/sbin:/usr/bin:/sbin:/bin",
    b"OCF_ROOT": b"/usr/lib/ocf",
    b"OCF_RESKEY_CRM_meta_timeout": b"3000",
}


class Stats:
    """Invocations and findings of the session (printed by conftest at the end)."""
    lock = threading.Lock()
    invocations = 0
    seconds = 0.0
    by_kind = {}
    codes = {}     # (kind, action) -> {rc: count}
    slowest = (0.0, None)

    @classmethod
    def add(cls, kind, elapsed, what, rc=None):
        with cls.lock:
            cls.invocations += 1
            cls.seconds += elapsed
            cls.by_kind[kind] = cls.by_kind.get(kind, 0) + 1
            key = (kind, what.decode("utf-8", "replace") if kind != "vmceph" else "-")
            hist = cls.codes.setdefault(key, {})
            hist[rc] = hist.get(rc, 0) + 1
            if elapsed > cls.slowest[0]:
                cls.slowest = (elapsed, what)


class Result:
    def __init__(self, argv, env, rc, out, err, elapsed, blocked):
        self.argv, self.env = argv, env
        self.rc, self.out, self.err = rc, out, err
        self.elapsed, self.blocked = elapsed, blocked

    @property
    def err_lines(self):
        return self.err.decode("utf-8", "backslashreplace").splitlines()

    @property
    def reasons(self):
        return [ln for ln in self.err_lines if ln.startswith("ocf-exit-reason:")]

    def describe(self):
        env = {k.decode(errors="backslashreplace"): _short(v) for k, v in self.env.items()
               if k not in BASE_ENV or BASE_ENV[k] != v}
        return "%s rc=%s %.1fs env=%s\nstderr tail:\n%s" % (
            " ".join(_short(a) for a in self.argv[-2:]), self.rc, self.elapsed, env,
            "\n".join(self.err_lines[-6:]))


def _short(v, n=120):
    s = v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
    return s if len(s) <= n else "%s...(%d)" % (s[:n], len(s))


def b(v):
    return v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")


def run(argv, env, kind="agent", stdin=subprocess.DEVNULL, close=()):
    """Run ``argv`` with exactly ``env`` (bytes); ``close``: descriptors (1, 2) closed in
    the child, as 'action >&-' does."""
    # an environment or an argument cannot carry a NUL byte (execve's strings end there)
    env = {b(k): b(v).replace(b"\0", b"") for k, v in env.items()}
    argv = [b(a).replace(b"\0", b"") for a in argv]
    if close:
        # the shell's '>&-': the agent starts with that descriptor closed
        script = "exec %s %s" % (" ".join("%d>&-" % fd for fd in close),
                                 " ".join("'%s'" % a.decode() for a in argv))
        argv = [b"/bin/sh", b"-c", script.encode()]
    t0 = time.monotonic()
    blocked = False
    try:
        p = subprocess.run(argv, env=env, stdin=stdin, capture_output=True, timeout=BLOCK_S)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err, blocked = None, e.stdout or b"", e.stderr or b"", True
    elapsed = time.monotonic() - t0
    Stats.add(kind, elapsed, argv[-1] if not close else b"closed-fds", rc)
    return Result(argv, env, rc, out, err, elapsed, blocked)


def agent(name, action, env, **kw):
    return run([AGENTS[name], action], env, kind=name, **kw)


def cli(args, env=None, **kw):
    e = {b"PATH": BASE_ENV[b"PATH"], b"PYTHONPATH": os.path.join(ROOT, "lib").encode()}
    e.update(env or {})
    return run([PYTHON, "-m", "vmceph"] + list(args), e, kind="vmceph", **kw)


def in_parallel(*thunks):
    """Run the thunks in threads (each starts a process): the fuzz uses both cores."""
    results = [None] * len(thunks)

    def go(i, f):
        results[i] = f()

    threads = [threading.Thread(target=go, args=(i, f)) for i, f in enumerate(thunks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# ------------------------------------------------------------------------- invariants

def problems(r, action=None):
    """What is wrong with one agent run, as a list of sentences (empty: nothing)."""
    out = []
    if r.blocked:
        return ["blocked: still running after %.0f s" % BLOCK_S]
    text = r.out + r.err
    if b"Traceback (most recent call last)" in text:
        out.append("traceback")
    if r.elapsed > SLOW_S:
        out.append("slow: %.1f s" % r.elapsed)
    if r.rc not in range(8):
        out.append("exit code %s is not an OCF code" % r.rc)
    reasons, lines = r.reasons, [ln for ln in r.err_lines if ln.strip()]
    if r.rc in range(1, 7) and not reasons:
        out.append("failure without an exit reason")
    if len(reasons) > 1:
        out.append("%d exit-reason lines (a value forged one)" % len(reasons))
    if reasons and lines[-1] != reasons[-1]:
        out.append("the exit reason is not the last line")
    if reasons and r.rc == 0:
        out.append("an exit reason on success (forged)")
    if action == "stop" and r.rc != 0:
        out.append("stop failed with nothing running")
    return out


def cli_problems(r):
    out = []
    if r.blocked:
        return ["blocked: still running after %.0f s" % BLOCK_S]
    if b"Traceback (most recent call last)" in r.out + r.err:
        out.append("traceback")
    if r.elapsed > SLOW_S:
        out.append("slow: %.1f s" % r.elapsed)
    if r.rc not in (0, 1, 2):
        out.append("exit code %s" % r.rc)
    if r.rc == 2 and not r.err.strip():
        out.append("usage error without a message")
    return out


def agreement(validate, action_name, action):
    """validate-all is the gate: what it accepts the action must not call a configuration
    error, and what the action calls one, validate-all must have refused."""
    if validate.rc == 0 and action.rc == 6:
        return ["validate-all said 0 but %s answered 6 (%s)"
                % (action_name, (action.reasons or ["no reason"])[-1])]
    return []
