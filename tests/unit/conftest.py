"""Unit-level defaults shared by every module here."""

import pytest


@pytest.fixture(autouse=True)
def _no_lingering_wait(monkeypatch):
    """A start refused for a watcher with no lock on a live member looks again for up to
    35 s (facts.LINGER_RETRY_CAP_S: the watch timeout of a client that died). The fakes'
    watchers never lapse on their own, so every such refusal would sleep that long in real
    time: off here; tests/unit/test_lingering_watch.py turns it on and tests it."""
    from vmceph import facts
    monkeypatch.setattr(facts, "LINGER_RETRY_CAP_S", 0.0)


@pytest.fixture(autouse=True)
def _record_dir_in_tmp(monkeypatch, tmp_path_factory):
    """deadclients keeps a reboot-proof copy of its record in /var/lib/vmceph: never the
    host's here; each test gets its own directory."""
    from vmceph import deadclients
    monkeypatch.setattr(deadclients, "RECORD_DIR",
                        str(tmp_path_factory.mktemp("varlib-vmceph")))
