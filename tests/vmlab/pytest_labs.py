"""One lab at a time on the machine, for the pytest levels that share a session lab
(tests/integration: `lab`, tests/e2e: `cluster`) and also have modules with labs of their
own (Pacemaker labs, the mass-failover and remote-node labs).

A session-scoped fixture lives until the end of the run, so a module with a lab of its
own ran beside the idle session lab: two labs on two cores, slower measurements and a
longer `make test`. The conftests order the modules that never use the session fixture
after those that do (own_labs_last) and close the session lab after the last test that
uses it (SessionCloser, from a pytest_runtest_teardown hook).
"""

from pathlib import Path


def uses(item, fixture):
    """Whether the test item needs the fixture (directly or through another fixture)."""
    return fixture in getattr(item, "fixturenames", ())


def own_labs_last(items, fixture, here, rank=None):
    """Reorder, in place, the items collected from directory ``here``: the modules none of
    whose tests use ``fixture`` go after the others; ``rank(module_name, shared)`` may
    order the modules further (a smaller rank first); the order within a module stays.
    Items from elsewhere keep their places."""
    here = Path(here).resolve()
    slots = [k for k, item in enumerate(items) if Path(str(item.fspath)).parent == here]
    shared = {Path(str(items[k].fspath)).name for k in slots if uses(items[k], fixture)}

    def key(item):
        name = Path(str(item.fspath)).name
        own = name not in shared
        return (own, rank(name, not own) if rank else 0)
    ours = sorted((items[k] for k in slots), key=key)
    for k, item in zip(slots, ours):
        items[k] = item
    return [items[k] for k in slots]


class SessionCloser:
    """Closes a session lab early: the fixture registers its closer (register), the
    conftest's teardown hook calls after_test(item) after each test, and the closer runs
    once, after the last test of the run that uses the fixture. The fixture's own
    finalizer calls close_if_open() for a run that ended early."""

    def __init__(self, fixture):
        self.fixture = fixture
        self._close = None

    def register(self, close):
        self._close = close

    def close_if_open(self):
        close, self._close = self._close, None
        if close is not None:
            close()

    def after_test(self, item):
        if self._close is None or not uses(item, self.fixture):
            return
        items = item.session.items
        later = items[items.index(item) + 1:] if item in items else []
        if not any(uses(i, self.fixture) for i in later):
            self.close_if_open()
