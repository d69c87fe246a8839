#!/usr/bin/python3
"""Who has the lab's RBD images open, sampled continuously; run INSIDE a live node:

    /usr/bin/python3 imagewatch.py '{"pool": "rbd", "images": [...], "interval": 0.5}'

One JSON line per sample on stdout, until killed (its node's crash kills it too; the
invariant checker, invariants.py, then starts another one on a survivor):

    {"t0": 812.31, "t1": 812.35, "node": "node1",
     "images": {"vm1-disk0": {"watchers": [{"addr", "id", "cookie"}],
                              "lockers": [{"client", "cookie", "addr"}]}
                "vm2-disk0": {"error": "TimedOut: ..."}},
     "blocklist": ["10.x.0.2:0/733915259", ...] or null, "blocklist_age": 0.4,
     "blocklist_until": {"10.x.0.2:0/733915259": 1796151469.9, ...}, "wall": 1796151400.1}

and, while one image's inspection has been waiting on Ceph for over a second, a
heartbeat every 0.5 s: {"busy": "vm1-disk0", "since": 811.2, "t": 812.9} (the checker
then knows a gap in the samples is Ceph not answering, not the sampler gone).

t0/t1 are CLOCK_MONOTONIC, which the nodes share with the host (no time namespaces), so
the checker can line samples up with what it saw happen to the nodes.

Images are opened read-only: that registers no watch, so sampling never looks like a
writer, and it re-opens them every time (a read-only handle is not told about lock
hand-overs). The blocklist is a monitor read: without monitor quorum it times out, so a
second thread refreshes it and the samples carry the last known list and its age; the
watcher lists (OSD reads) keep coming meanwhile. Every librados call is bounded by
configuration (the binding ignores its timeout arguments), and the process ends with
os._exit(): Rados.shutdown() can hang with an op queued for a dead OSD.
"""

import datetime
import json
import os
import socket
import sys
import threading
import time

import rados
import rbd

CONF = "/etc/ceph/ceph.conf"


def connect():
    while True:
        try:
            cluster = rados.Rados(conffile=CONF, name="client.admin",
                                  conf={"client_mount_timeout": "5",
                                        "rados_mon_op_timeout": "3",
                                        "rados_osd_op_timeout": "3",
                                        "admin_socket": "", "log_to_stderr": "false"})
            cluster.connect()
            return cluster
        except rados.Error as exc:
            print(json.dumps({"t0": time.monotonic(), "connect_error": str(exc)}), flush=True)
            time.sleep(0.5)


def parse_blocklist(out):
    """`osd blocklist ls` in JSON is two arrays back to back (entries, then ranges)."""
    return list(parse_blocklist_until(out))


def parse_blocklist_until(out):
    """{addr: expiry as epoch seconds, or None} from `osd blocklist ls` in JSON. Seen on
    16.2: [{"addr":"10.224.0.1:0/855890594","until":"2026-12-01T18:57:49.365921+0000"}][]"""
    text = out.decode() if isinstance(out, bytes) else out
    decoder, i, entries = json.JSONDecoder(), 0, {}
    text = text.strip()
    while i < len(text):
        doc, i = decoder.raw_decode(text, i)
        for e in doc:
            if isinstance(e, dict) and "addr" in e:
                entries[e["addr"]] = _epoch(e.get("until"))
        while i < len(text) and text[i].isspace():
            i += 1
    return entries


def _epoch(stamp):
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except (TypeError, ValueError):
        return None


class Blocklist(threading.Thread):
    def __init__(self, cluster, interval):
        super().__init__(daemon=True)
        self.cluster, self.interval = cluster, interval
        self.addrs, self.at, self.until = None, None, None

    def run(self):
        # 'osd blocklist ls' is its own command: with '"blocklistop": "ls"' a 16.2.15 monitor
        # answers -22 ("unable to parse address"), and this sampler saw no blocklist at all
        cmd = json.dumps({"prefix": "osd blocklist ls", "format": "json"})
        while True:
            try:
                ret, out, _ = self.cluster.mon_command(cmd, b"")
                if ret == 0:
                    until = parse_blocklist_until(out)
                    self.addrs, self.until, self.at = list(until), until, time.monotonic()
            except (rados.Error, ValueError):
                pass
            time.sleep(self.interval)


def inspect(ioctx, image):
    try:
        with rbd.Image(ioctx, image, read_only=True) as img:
            lockers = img.list_lockers()
            watchers = list(img.watchers_list())
    except (rbd.Error, rados.Error) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    held = []
    if lockers:
        held = [{"client": c, "cookie": k, "addr": a} for c, k, a in lockers["lockers"]]
    return {"watchers": watchers, "lockers": held}


OUT = threading.Lock()
BUSY = {}   # the image being inspected now and since when (monotonic)


def emit(doc):
    try:
        with OUT:
            print(json.dumps(doc, default=str), flush=True)
    except BrokenPipeError:
        os._exit(0)


def heartbeat():
    while True:
        time.sleep(0.5)
        busy = dict(BUSY)
        if busy and time.monotonic() - busy["since"] > 1.0:
            emit({"busy": busy["image"], "since": busy["since"], "t": time.monotonic()})


def main():
    args = json.loads(sys.argv[1])
    threading.Thread(target=heartbeat, daemon=True).start()
    cluster = connect()
    blocklist = Blocklist(cluster, args.get("interval", 0.5))
    blocklist.start()
    ioctx = cluster.open_ioctx(args["pool"])
    node = socket.gethostname()
    while True:
        t0 = time.monotonic()
        images = {}
        for image in args["images"]:
            BUSY.update(image=image, since=time.monotonic())
            images[image] = inspect(ioctx, image)
            BUSY.clear()
        t1 = time.monotonic()
        age = None if blocklist.at is None else round(t1 - blocklist.at, 2)
        emit({"t0": t0, "t1": t1, "node": node, "images": images,
              "blocklist": blocklist.addrs, "blocklist_age": age,
              "blocklist_until": blocklist.until, "wall": time.time()})
        time.sleep(max(0.0, args.get("interval", 0.5) - (t1 - t0)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    os._exit(0)
