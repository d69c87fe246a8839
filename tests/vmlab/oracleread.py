#!/usr/bin/python3
"""The write oracle's stamp, and its reader; the reader runs INSIDE a live node:

    /usr/bin/python3 oracleread.py '{"pool": "rbd", "images": {"vm1-disk0": [offset, slots]}}'

prints one JSON document: {"images": {image: {"stamps": {slot: stamp fields}, "size": n}
or {"error": "..."}}}. It imports nothing of vmlab (it runs in a node, by path), so the
stamp's codec lives here and writeoracle.py imports it from this file.

A stamp is the first STAMP.size bytes of a 4 KiB block the oracle's writer makes a VM's
QEMU write (HMP qemu-io `write -s FILE`); the rest of the block is zero. Each field says
who wrote it: the run (a random nonce, so a block left by an earlier run is recognised as
such), the VM, the node and QEMU pid it went through, the owner generation (the writer
bumps it for every new QEMU it writes through), the writer's sequence number, the slot and
the wall time it was issued at, then a CRC32 over all of it (a torn or foreign block does
not parse).

The image is opened read-only: that registers no watch and takes no lock, so reading never
looks like a writer to the agents nor to the invariant checker. Every librados call is
bounded by configuration (the binding ignores timeout arguments) and the process ends with
os._exit() (Rados.shutdown() can hang with an op queued for a dead OSD).
"""

import json
import os
import struct
import sys
import zlib

BLOCK = 4096
MAGIC = b"VMCWO1\0\0"
# magic, run, vm, node, pid, gen, seq, slot, wall
STAMP = struct.Struct("<8sI32s16sIIQId")
CHUNK = 4 << 20


def encode(run, vm, node, pid, gen, seq, slot, wall):
    """The BLOCK bytes of one stamped block."""
    body = STAMP.pack(MAGIC, run, vm.encode()[:32], node.encode()[:16], pid, gen, seq, slot,
                      wall)
    block = body + struct.pack("<I", zlib.crc32(body))
    return block + b"\0" * (BLOCK - len(block))


def decode(block):
    """The stamp's fields as a dict, or None if block holds no valid stamp."""
    n = STAMP.size
    if len(block) < n + 4 or block[:8] != MAGIC:
        return None
    body, (crc,) = block[:n], struct.unpack_from("<I", block, n)
    if zlib.crc32(body) != crc:
        return None
    _, run, vm, node, pid, gen, seq, slot, wall = STAMP.unpack(body)
    return {"run": run, "vm": vm.rstrip(b"\0").decode(errors="replace"),
            "node": node.rstrip(b"\0").decode(errors="replace"), "pid": pid, "gen": gen,
            "seq": seq, "slot": slot, "wall": wall}


def read_image(ioctx, image, offset, slots):
    import rbd
    stamps = {}
    with rbd.Image(ioctx, image, read_only=True) as img:
        size = img.size()
        end = min(size, offset + slots * BLOCK)
        pos = offset
        while pos < end:
            data = img.read(pos, min(CHUNK, end - pos))
            for k in range(0, len(data) - BLOCK + 1, BLOCK):
                stamp = decode(data[k:k + BLOCK])
                if stamp is not None:
                    stamps[(pos + k - offset) // BLOCK] = stamp
            pos += len(data)
    return {"stamps": stamps, "size": size}


def main():
    import rados
    import rbd
    args = json.loads(sys.argv[1])
    cluster = rados.Rados(conffile="/etc/ceph/ceph.conf", name="client.admin",
                          conf={"client_mount_timeout": "10", "rados_mon_op_timeout": "10",
                                "rados_osd_op_timeout": "10", "admin_socket": "",
                                "log_to_stderr": "false"})
    cluster.connect()
    ioctx = cluster.open_ioctx(args["pool"])
    out = {}
    for image, (offset, slots) in args["images"].items():
        try:
            out[image] = read_image(ioctx, image, offset, slots)
        except (rbd.Error, rados.Error) as exc:
            out[image] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({"images": out}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - reported to the caller, then a hard exit
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    os._exit(0)
