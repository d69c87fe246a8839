"""One measured process inside a lab node, run the way pacemaker-execd runs an agent.

The process is started as

    /usr/bin/time -f 'BENCH-MAXRSS %M' -o FILE  nsenter -t HOLDER -m -n -u --wd=/ -- AGENT ACTION

with ``os.posix_spawn`` and reaped with ``os.wait4``:
- wall time: from the spawn to the return of wait4;
- CPU (user + system): wait4's rusage, which covers the whole process tree (time, nsenter,
  the agent and every child the agent waited for: virsh, crm_mon, ...). Work done on the
  agent's behalf by daemons (libvirtd, ceph-mon, ceph-osd, pacemaker-based) is not in it;
  libvirtd's share is sampled separately (``server_cpu``);
- peak memory: the largest resident set of any single process of that tree (ru_maxrss).

Why GNU time in front: a child exec'd from this (Python) process inherits the parent's
resident-set high-water mark (Linux records the old mm's hiwater_rss at exec, and
posix_spawn/vfork share the parent's mm), so wait4's ru_maxrss seen here would never go below
this harness's ~22 MiB: /bin/true would "use" 22 MiB. GNU time is a small C program: the
child it forks starts from its ~0.2 MiB, and it reports the child's ru_maxrss (%M) from its
own wait4. CPU and wall come from our wait4 on time (time's own share is ~1 ms, the same for
every row, floors included).

nsenter must not fork (it only does when entering a PID namespace, which we don't):
``verify()`` checks that the command nsenter runs is a direct child of time, i.e. that the
process wait4 reaps contains the agent itself, and that a known amount of CPU burnt by the
agent process shows up in wait4's rusage.
"""

import os
import signal
import threading
import time

from vmlab.util import base_env

TIME_BIN = "/usr/bin/time"
NSENTER = "/usr/bin/nsenter"
MARK = "BENCH-MAXRSS"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Measurement:
    __slots__ = ("argv", "rc", "wall", "user", "sys", "maxrss_kib", "stdout", "stderr",
                 "server_cpu", "killed", "node", "pid")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    @property
    def cpu(self):
        return self.user + self.sys

    def exit_reason(self):
        lines = [x for x in (self.stderr or "").splitlines() if x.startswith("ocf-exit-reason:")]
        return lines[-1][len("ocf-exit-reason:"):] if lines else ""

    def __repr__(self):
        return ("Measurement(rc=%s, wall=%.1f ms, cpu=%.1f ms, maxrss=%s KiB%s)"
                % (self.rc, self.wall * 1e3, self.cpu * 1e3, self.maxrss_kib,
                   ", KILLED" if self.killed else ""))


class RunError(RuntimeError):
    pass


def proc_cpu_seconds(pid):
    """utime + stime of a running process in seconds, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


class NodeRunner:
    """Runs measured commands inside the lab's nodes."""

    def __init__(self, lab, workdir):
        # without GNU time (Debian package 'time') peak memory is not measured (see above)
        self.use_time = os.access(TIME_BIN, os.X_OK)
        self.lab = lab
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self._out = os.path.join(workdir, "stdout")
        self._err = os.path.join(workdir, "stderr")
        self._rss = os.path.join(workdir, "maxrss")

    def _holder(self, i):
        if not self.lab.alive(i):
            raise RunError("node %s is down" % self.lab.node_name(i))
        return self.lab.holder_pid(i)

    def run(self, i, argv, env=None, timeout=120.0, server_pid=None):
        """Run argv in node i with ``env`` added to a clean environment; a Measurement.
        ``server_pid``: a daemon whose CPU use during the run is recorded (server_cpu)."""
        holder = self._holder(i)
        full = [NSENTER, "-t", str(holder), "-m", "-n", "-u", "--wd=/", "--"] + list(argv)
        if self.use_time:
            full = [TIME_BIN, "-f", MARK + " %M", "-o", self._rss] + full
        environ = base_env(env)
        fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
               for p in (self._out, self._err)]
        devnull = os.open(os.devnull, os.O_RDONLY)
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, fds[0], 1),
                   (os.POSIX_SPAWN_DUP2, fds[1], 2)]
        try:
            os.unlink(self._rss)
        except FileNotFoundError:
            pass
        killed = []
        server0 = proc_cpu_seconds(server_pid) if server_pid else None
        t0 = time.monotonic()
        pid = os.posix_spawn(full[0], full, environ, file_actions=actions, setpgroup=0)
        for fd in fds + [devnull]:
            os.close(fd)

        def kill():
            killed.append(True)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, ru = os.wait4(pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - t0
        server1 = proc_cpu_seconds(server_pid) if server_pid else None
        rc = os.waitstatus_to_exitcode(status)
        maxrss = None
        try:
            with open(self._rss) as f:
                for line in f:
                    if line.startswith(MARK):
                        maxrss = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        with open(self._out, errors="replace") as f:
            out = f.read()
        with open(self._err, errors="replace") as f:
            err = f.read()
        return Measurement(argv=list(argv), rc=rc, wall=wall, user=ru.ru_utime, sys=ru.ru_stime,
                           maxrss_kib=maxrss, stdout=out, stderr=err, killed=bool(killed),
                           server_cpu=(server1 - server0) if server0 is not None
                           and server1 is not None else None, node=i, pid=pid)

    def verify(self, i):
        """Check the measuring chain; returns a sentence for the report, raises on failure."""
        m = self.run(i, ["/bin/sh", "-c", "echo $$ $PPID"], timeout=30)
        try:
            sh_pid, sh_ppid = (int(x) for x in m.stdout.split())
        except ValueError:
            raise RunError("nsenter check: unexpected output %r %r" % (m.stdout, m.stderr))
        # With time: the spawned process is `time`; its child exec'd nsenter, which exec'd
        # sh: if nsenter had forked, sh's parent would be nsenter, a grandchild of time.
        # Without time: we spawned nsenter, which must have become sh itself.
        if (sh_ppid != m.pid) if self.use_time else (sh_pid != m.pid):
            raise RunError("nsenter forked: sh (pid %d, parent %d) is not the process "
                           "wait4 reaps (%d) or its direct child" % (sh_pid, sh_ppid, m.pid))
        burn = ["/usr/bin/python3", "-S", "-c",
                "import time\nt=time.process_time()\n"
                "while time.process_time()-t<0.2: pass"]
        b = self.run(i, burn, timeout=30)
        if b.cpu < 0.19:
            raise RunError("wait4 did not see the agent's CPU: %.3f s of 0.2 s" % b.cpu)
        t = self.run(i, ["/bin/true"], timeout=30)
        return ("verified at the start of the run: the command nsenter runs is %s "
                "(nsenter does not fork); a process burning 0.200 s of CPU inside the "
                "node is measured at %.3f s; /bin/true measures %.1f ms wall, %.1f ms CPU, "
                "%.1f MiB peak (the overhead of time + nsenter in every row)"
                % ("time's direct child" if self.use_time else "the process wait4 reaps",
                   b.cpu, t.wall * 1e3, t.cpu * 1e3, (t.maxrss_kib or 0) / 1024.0))
