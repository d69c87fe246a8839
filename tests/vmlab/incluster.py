#!/usr/bin/python3
"""Ceph client side of the lab, run INSIDE a node with Debian's python3 (it has rados/rbd):

    /usr/bin/python3 incluster.py COMMAND [JSON-ARGUMENTS]

It reads the node's own /etc/ceph/ceph.conf and admin keyring. One process does what
would otherwise be many `ceph` CLI calls (each ~0.5 s of Python start-up on this box),
and it waits for the cluster in-process instead of forking a client per poll.
Every librados call is bounded by configuration, because the timeout arguments of
connect() and mon_command() are ignored (Ceph PR #40932). The process ends with
os._exit(): Rados.shutdown() can hang with an op queued for a dead OSD.

Commands (each prints one JSON document on stdout):
  quorum                                  {"quorum_names": [...]}
  wait-quorum {"count", "timeout"}        wait until at least count mons are in quorum
  osd-new {"osds": [{"id","uuid","secret"}]}   register pre-made OSDs (ceph osd new)
  pool-setup {"pool","pg_num","size","min_size"}   create + rbd pool init (idempotent)
  status                                  summary of `ceph status`
  wait-healthy {"timeout","osds","mons","clean"}   HEALTH_OK + all OSDs/mons up (+ PGs clean)
  image-clients {"pool","image"}          lockers + watchers via a read-only handle (no watch)
  inject {"mons", "args"}                 injectargs into the named running mons
"""

import json
import os
import sys
import time

import rados
import rbd

CONF = "/etc/ceph/ceph.conf"


def connect(op_timeout=10, mount_timeout=10):
    cluster = rados.Rados(conffile=CONF, name="client.admin",
                          conf={"client_mount_timeout": str(mount_timeout),
                                "rados_mon_op_timeout": str(op_timeout),
                                "rados_osd_op_timeout": str(op_timeout)})
    cluster.connect()
    return cluster


def connect_until(deadline):
    """Connect, retrying while the mons have no quorum yet (connect then times out)."""
    while True:
        try:
            return connect(mount_timeout=max(2, min(10, int(deadline - time.monotonic()))))
        except (rados.Error, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def mon(cluster, prefix, inbuf=b"", **args):
    args.update(prefix=prefix, format="json")
    ret, out, err = cluster.mon_command(json.dumps(args), inbuf)
    if ret != 0:
        raise RuntimeError(f"{prefix}: {ret} {err}")
    return json.loads(out) if out else None


def cmd_quorum(_args):
    cluster = connect(op_timeout=5)
    return {"quorum_names": mon(cluster, "quorum_status")["quorum_names"]}


def cmd_wait_quorum(args):
    deadline = time.monotonic() + args["timeout"]
    cluster = connect_until(deadline)
    while True:
        try:
            names = mon(cluster, "quorum_status")["quorum_names"]
            if len(names) >= args["count"]:
                return {"quorum_names": names}
        except RuntimeError:
            pass  # -110 while an election runs
        if time.monotonic() > deadline:
            raise TimeoutError(f"quorum of {args['count']} not reached")
        time.sleep(0.3)


def cmd_osd_new(args):
    cluster = connect()
    existing = {o["osd"] for o in mon(cluster, "osd dump")["osds"]}
    for osd in args["osds"]:
        if osd["id"] in existing:
            continue
        secret = json.dumps({"cephx_secret": osd["secret"]}).encode()
        mon(cluster, "osd new", inbuf=secret, uuid=osd["uuid"], id=osd["id"])
    return {"osds": [o["id"] for o in args["osds"]]}


def cmd_pool_setup(args):
    cluster = connect(op_timeout=60)
    t0 = time.monotonic()
    pool = args["pool"]
    if not cluster.pool_exists(pool):
        mon(cluster, "osd pool create", pool=pool, pg_num=args["pg_num"],
            pgp_num=args["pg_num"], pool_type="replicated")
    # ceph.conf's pool defaults already give size/min_size: each `osd pool set` would cost
    # a paxos round (~1 s), so only correct what differs
    for var in ("size", "min_size"):
        if mon(cluster, "osd pool get", pool=pool, var=var)[var] != args[var]:
            # a one-node lab has pools of size 1, which Ceph accepts only with the scary flag
            mon(cluster, "osd pool set", pool=pool, var=var, val=str(args[var]),
                yes_i_really_mean_it=args[var] == 1)
    created = time.monotonic() - t0
    with cluster.open_ioctx(pool) as ioctx:
        rbd.RBD().pool_init(ioctx, False)  # also enables the "rbd" application
    return {"pool": pool, "create_s": round(created, 2), "total_s": round(time.monotonic() - t0, 2)}


def summarize(status):
    pgmap = status.get("pgmap", {})
    clean = sum(s["count"] for s in pgmap.get("pgs_by_state", [])
                if s["state_name"] == "active+clean")
    osdmap = status["osdmap"]
    osdmap = osdmap.get("osdmap", osdmap)  # nested in older releases
    return {"health": status["health"]["status"],
            "checks": {k: v["summary"]["message"]
                       for k, v in status["health"].get("checks", {}).items()},
            "quorum_names": status.get("quorum_names", []),
            "num_osds": osdmap["num_osds"], "num_up_osds": osdmap["num_up_osds"],
            "num_pgs": pgmap.get("num_pgs", 0), "pgs_clean": clean,
            "mgr_available": status.get("mgrmap", {}).get("available", False)}


def cmd_status(_args):
    return summarize(mon(connect(op_timeout=10), "status"))


def healthy(s, args):
    return (s["health"] == "HEALTH_OK"
            and s["num_osds"] == s["num_up_osds"] == args["osds"]
            and len(s["quorum_names"]) == args["mons"]
            and (not args["clean"] or s["pgs_clean"] == s["num_pgs"] > 0))


def cmd_wait_healthy(args):
    deadline = time.monotonic() + args["timeout"]
    cluster = connect_until(deadline)
    last = None
    while True:
        try:
            last = summarize(mon(cluster, "status"))
            if healthy(last, args):
                return last
        except RuntimeError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"not healthy: {json.dumps(last)}")
        time.sleep(0.5)


def cmd_image_clients(args):
    cluster = connect()
    with cluster.open_ioctx(args["pool"]) as ioctx:
        # read-only: registers no watch of its own, so it does not disturb what it observes
        with rbd.Image(ioctx, args["image"], read_only=True) as image:
            lockers = image.list_lockers()
            watchers = list(image.watchers_list())
    result = []
    if lockers:
        for client, cookie, addr in lockers["lockers"]:
            result.append({"client": client, "cookie": cookie, "addr": addr,
                           "tag": lockers["tag"], "exclusive": lockers["exclusive"]})
    return {"lockers": result, "watchers": watchers}


def cmd_inject(args):
    """Change a setting of running mons (a runtime override, like `ceph tell mon.X injectargs`)."""
    cluster = connect()
    for name in args["mons"]:
        ret, _, err = cluster.mon_command(json.dumps({"prefix": "injectargs",
                                                      "injected_args": args["args"]}),
                                          b"", target=name)
        if ret != 0:
            raise RuntimeError(f"injectargs on mon.{name}: {ret} {err}")
    return {"mons": args["mons"]}


COMMANDS = {"inject": cmd_inject, "quorum": cmd_quorum, "wait-quorum": cmd_wait_quorum,
            "osd-new": cmd_osd_new,
            "pool-setup": cmd_pool_setup, "status": cmd_status, "wait-healthy": cmd_wait_healthy,
            "image-clients": cmd_image_clients}


def main():
    command = sys.argv[1]
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    try:
        result = COMMANDS[command](args)
    except Exception as exc:  # noqa: BLE001 - the caller gets the reason on stderr
        print(f"{command}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(json.dumps(result, default=str), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
