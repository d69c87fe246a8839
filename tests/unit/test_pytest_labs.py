"""The lab levels' ordering and early close (tests/vmlab/pytest_labs.py): a module with a
lab of its own must never run beside the session lab, and the session lab must not go
down while a later test still needs it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmlab.pytest_labs import SessionCloser, own_labs_last  # noqa: E402

HERE = Path("/x/tests/e2e")


class Item:
    def __init__(self, module, fixtures, where=HERE):
        self.fspath = where / module
        self.fixturenames = list(fixtures)
        self.session = None

    def __repr__(self):
        return "%s%s" % (self.fspath.name, self.fixturenames)


def session(items):
    class S:
        pass
    s = S()
    s.items = items
    for it in items:
        it.session = s
    return s


def test_modules_without_the_session_fixture_go_last_in_their_order():
    a1, a2 = Item("test_a.py", ["cluster"]), Item("test_a.py", [])
    m1, m2 = Item("test_mass.py", ["mass_lab"]), Item("test_mass.py", ["mass_lab"])
    r = Item("test_remote.py", [])
    b = Item("test_b.py", ["cluster", "story"])
    items = [a1, m1, m2, r, a2, b]
    own_labs_last(items, "cluster", HERE)
    assert items == [a1, a2, b, m1, m2, r]


def test_items_of_another_directory_keep_their_slots_and_rank_orders_shared_modules():
    u = Item("test_unit.py", [], where=Path("/x/tests/unit"))
    a, b = Item("test_a.py", ["cluster"]), Item("test_b.py", ["cluster"])
    own = Item("test_own.py", [])
    items = [own, u, a, b]
    got = own_labs_last(items, "cluster", HERE,
                        rank=lambda name, shared: {"test_b.py": 0}.get(name, 1))
    assert items == [b, u, a, own]
    assert got == [b, a, own]


def test_closes_once_after_the_last_user_and_not_before():
    closed = []
    items = [Item("test_a.py", ["cluster"]), Item("test_a.py", []),
             Item("test_b.py", ["cluster"]), Item("test_mass.py", ["mass_lab"])]
    session(items)
    c = SessionCloser("cluster")
    c.register(lambda: closed.append(True))
    c.after_test(items[0])
    assert closed == []            # test_b still needs it
    c.after_test(items[1])
    assert closed == []            # not a user: never the trigger
    c.after_test(items[2])
    assert closed == [True]        # the last user is done
    c.after_test(items[2])
    c.close_if_open()
    assert closed == [True]        # once


def test_an_interrupted_run_closes_at_the_fixture_finalizer():
    closed = []
    items = [Item("test_a.py", ["cluster"]), Item("test_b.py", ["cluster"])]
    session(items)
    c = SessionCloser("cluster")
    c.register(lambda: closed.append(True))
    c.after_test(items[0])
    assert closed == []
    c.close_if_open()
    assert closed == [True]
