"""Generations: is a saved memory state still the guest's latest, or has it run since?

With ``snapshot``, stop saves the guest's memory to ``<snapshot>/<name>.state`` on this node
and the next start here restores it. If the guest has meanwhile run on another node and
written to its disks, restoring that memory puts old page cache and filesystem metadata
over a newer disk: the guest's filesystem is corrupted. So:

- every start and every migration writes a new generation token into the image metadata of
  the domain's first guarded image (key ``vmceph.generation``: ``rbd image-meta get`` shows
  it; it lives with the disk, so every node sees the same one);
- stop, before saving the memory, reads the token and keeps it next to the state file
  (``<name>.state.gen``);
- start restores the state only if the recorded token is still the image's token;
  otherwise (or when either is unknown) the state is discarded with a warning and the
  guest boots from its disk.

A token, not a counter: no read-modify-write race between two writers of the metadata (at
most one can pass the start check anyway), and it says who stamped it when.
"""

import os
import socket
import time

META_KEY = "vmceph.generation"
SIDECAR_SUFFIX = ".gen"


def new_token(node=None, why="start"):
    """'20261201T154203.123456Z node1 start 9f3c2a1b': unique, readable."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + ".%06dZ" % int(now % 1 * 1e6)
    return "%s %s %s %s" % (stamp, node or socket.gethostname().split(".")[0], why,
                            os.urandom(4).hex())


def sidecar(state_file):
    return state_file + SIDECAR_SUFFIX


def read_recorded(state_file):
    """The token recorded with ``state_file``, None if none (or unreadable)."""
    try:
        with open(sidecar(state_file)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def write_recorded(state_file, token):
    path = sidecar(state_file)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def discard(state_file):
    """Delete the state file and its generation; best-effort (the file system may be
    read-only or gone: lab, a snapshot directory on a read-only mount). Returns the errors
    (empty when both are gone)."""
    errors = []
    for path in (state_file, sidecar(state_file)):
        if not os.path.lexists(path):   # unlink says EROFS, not ENOENT, on a read-only fs
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            errors.append("%s: %s" % (path, e.strerror or e))
    return errors


def may_restore(recorded, current):
    """(True, why) if a state saved at generation ``recorded`` may be restored over disks
    now at generation ``current``; (False, why) otherwise. Unknown is never current."""
    if recorded is None:
        return False, "no generation was recorded with it (saved by an older vmceph, or " \
                      "Ceph could not be asked at stop)"
    if current is None:
        return False, "the image carries no generation (never stamped by vmceph, or its " \
                      "metadata could not be read)"
    if recorded != current:
        return False, "the guest has run since it was saved (saved at generation '%s', the " \
                      "disk is now at '%s')" % (recorded, current)
    return True, "generation '%s' is still current" % current
