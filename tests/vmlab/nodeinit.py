#!/usr/bin/python3
"""The init process of one lab node. Standalone on purpose (stdlib only, run by path).

It is started already inside the node's network namespace and in fresh mount + UTS
namespaces (nsenter --net=... unshare --mount --uts --propagation private ...). It:
  1. gives the node its own filesystem view: bind mounts of per-node state directories
     over /etc/ceph, /var/lib/libvirt, /run, ... as listed in the config file;
  2. sets the node's hostname;
  3. becomes a child subreaper, so that every daemon that double-forks (virtlogd,
     QEMUs started by libvirtd) is re-parented here and reaped at once: this machine's
     PID 1 reaps orphans only every ~1.5 s, and libvirt waits for a dead QEMU to vanish;
  4. spawns the node's daemons on request: one JSON object per connection on a unix
     socket, {"name", "cmd", "log"} -> {"pid"}; the command runs as `sh -c CMD` in its
     own session with stdout+stderr appended to the log, and its PID is written to
     PID_DIR/NAME so the lab can stop one daemon (e.g. the mon) later.
Because it owns the node's namespaces, killing every process of the node's netns
(this one included) is a real power-off: nothing of the node survives.

usage: nodeinit.py CONFIG.json
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C", "LANG": "C"}


def log(message):
    print(f"{time.strftime('%H:%M:%S')} nodeinit[{os.getpid()}]: {message}", flush=True)


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")


def sh(argv):
    """Run a mount-type command; a failure aborts the node's boot with the reason."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def build_filesystem(cfg):
    # `unshare --mount` copied the host's /run/netns/* mounts, and each copy pins its netns
    # (also a deleted one, also another lab's) alive until this namespace dies: drop them.
    for path in cfg.get("umount", []):
        subprocess.run(["umount", "-R", path], capture_output=True, timeout=20)
    for m in cfg["mounts"]:
        kind, src, dst = m["type"], m.get("src"), m["dst"]
        if kind == "bind":
            sh(["mount", "--bind", src, dst])
        elif kind == "tmpfs":
            sh(["mount", "-t", "tmpfs", "-o", m.get("options", "mode=755"), "tmpfs", dst])
        elif kind == "overlay":
            sh(["mount", "-t", "overlay", "overlay", "-o", m["options"], dst])
        else:
            sys.exit(f"unknown mount type {kind!r}")
    for path in cfg.get("mkdirs", []):
        os.makedirs(path, exist_ok=True)


class Spawner:
    def __init__(self, pid_dir, spawn_log):
        self.pid_dir = pid_dir
        self.spawn_log = spawn_log
        self.names = {}  # pid -> name, to log who exited

    def note(self, text):
        with open(self.spawn_log, "a") as f:
            f.write(f"{time.time():.3f} {text}\n")

    def reap(self, *_):
        """SIGCHLD: collect every exited child, ours or re-parented orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.names:
                self.note(f"{pid} {self.names.pop(pid)} exited, status {status}")

    def spawn(self, name, cmd, logfile):
        actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", cmd], DAEMON_ENV,
                             file_actions=actions, setsid=True)
        self.names[pid] = name
        tmp = os.path.join(self.pid_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.rename(tmp, os.path.join(self.pid_dir, name))
        self.note(f"{pid} {name}: {cmd}")
        return pid


def handle(conn, spawner):
    conn.settimeout(10)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    try:
        req = json.loads(data)
        reply = {"pid": spawner.spawn(req["name"], req["cmd"], req["log"])}
    except Exception as exc:  # noqa: BLE001 - report any failure to the caller
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    conn.sendall(json.dumps(reply).encode() + b"\n")


def serve(cfg, spawner):
    if os.path.exists(cfg["socket"]):
        os.unlink(cfg["socket"])
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(cfg["socket"])
    srv.listen(16)
    # Ready only now: the lab waits for this file before it talks to the node.
    tmp = cfg["pidfile"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, cfg["pidfile"])
    log(f"node {cfg['hostname']} ready")
    while True:
        conn, _ = srv.accept()  # PEP 475: retried after SIGCHLD interrupts it
        with conn:
            try:
                handle(conn, spawner)
            except OSError as exc:
                log(f"request failed: {exc}")


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    os.chdir("/")
    become_subreaper()
    build_filesystem(cfg)
    socket.sethostname(cfg["hostname"])
    os.makedirs(cfg["pid_dir"], exist_ok=True)
    spawner = Spawner(cfg["pid_dir"], cfg["spawn_log"])
    signal.signal(signal.SIGCHLD, spawner.reap)
    serve(cfg, spawner)


if __name__ == "__main__":
    main()
