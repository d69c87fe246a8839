"""One owner per lab name: a run that brings a lab up holds an exclusive lock on it.

`Lab.up()` refuses a lab that is already up, but the e2e tests and the demo start with
`down()` to clear what an interrupted run left, and on a machine shared by several people
that would kill a lab another run is using (it happened: two e2e runs under the same name
tore each other's nodes down). The lock makes the second run stop at once and say who has
the lab, instead.

    with owning(lab):      # LabError if another live process owns the lab
        lab.down(); lab.up(); ...
"""

import contextlib
import fcntl
import os

from .util import LabError


def lock_path(lab):
    # beside the state dir, not in it: down() removes the state dir
    return os.path.join(lab.state_root, f".{lab.name}.lock")


@contextlib.contextmanager
def owning(lab):
    os.makedirs(lab.state_root, exist_ok=True)
    fd = os.open(lock_path(lab), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LabError(f"lab {lab.name!r} is in use by another run (pid {holder}); "
                           f"wait for it, or use another name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
