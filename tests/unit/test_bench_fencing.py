"""The pure parts of the fencing benchmark (tests/bench/fencing.py): log timestamps, the
timeline it reads from the survivors' logs, the report cells and the section it writes
into docs/benchmarks.md without touching the rest of the file."""

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench import fencing  # noqa: E402


def _local(y, mo, d, h, mi, s, us=0):
    return time.mktime(datetime.datetime(y, mo, d, h, mi, s).timetuple()) + us / 1e6


def test_pacemaker_log_timestamp_is_local_time_with_milliseconds():
    line = "Dec 01 18:54:39.008 node1 pacemaker-controld  [5743] (te_fence_node) notice: x"
    assert abs(fencing.pcmk_epoch(line, year=2026) - _local(2026, 12, 1, 18, 54, 39, 8000)) \
        < 1e-6
    assert fencing.pcmk_epoch("  continuation line") is None


def test_ceph_log_timestamp_carries_its_zone():
    line = ("2026-12-01T18:54:35.340+0000 7f2b03fff6c0  0 log_channel(cluster) log [INF] : "
            "mon.node2 calling monitor election")
    want = datetime.datetime(2026, 12, 1, 18, 54, 35, 340000,
                             tzinfo=datetime.timezone.utc).timestamp()
    assert abs(fencing.ceph_epoch(line) - want) < 1e-6
    assert fencing.ceph_epoch("Dec 01 18:54:39.008 node1 x") is None


def test_parse_conf():
    assert fencing.parse_conf("mon election timeout=1, mon lease = 2,") == {
        "mon election timeout": "1", "mon lease": "2"}
    assert fencing.parse_conf("") == {}


class _Lab:
    """Just what Logs needs: node names and log paths under a temporary dir."""

    def __init__(self, root):
        self.root = root
        self.indexes = [1, 2, 3]

    def node_name(self, i):
        return "node%d" % i

    def node_dir(self, i, *parts):
        return os.path.join(self.root, "node%d" % i, *parts)


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def test_timeline_reads_each_event_after_the_mark_on_the_survivors(tmp_path):
    lab = _Lab(str(tmp_path))
    logs = fencing.Logs(lab)
    y = time.localtime().tm_year
    p2 = lab.node_dir(2, "log-pacemaker", "pacemaker.log")
    m2 = lab.node_dir(2, "log-ceph", "ceph-mon.node2.log")
    # before the mark: an older fencing of node3 must not count
    _write(p2, ["Dec 01 10:00:00.000 node2 pacemaker-fenced [1] (finalize_op) notice: "
                "Operation 'reboot' targeting node3 by node1 for pacemaker-controld.9@node1: "
                "OK"])
    _write(m2, ["2026-12-01T10:00:00.000+0000 7f 0 log [INF] : mon.node2 calling monitor "
                "election"])
    logs.mark()
    since = _local(y, 12, 1, 18, 0, 0)
    _write(p2, [
        "Dec 01 18:00:02.200 node2 pacemaker-controld [1] (crm_update_peer_state_iter) "
        "notice: Node node3 state is now lost | nodeid=3",
        "Dec 01 18:00:02.900 node2 pacemaker-controld [1] (te_fence_node) notice: Requesting "
        "fencing (reboot) of node node3 | action=1 timeout=60000",
        "Dec 01 18:00:06.500 node2 pacemaker-fenced [1] (finalize_op) notice: Operation "
        "'reboot' targeting node3 by node1 for pacemaker-controld.5@node2: Error occurred",
        "Dec 01 18:00:07.250 node2 pacemaker-fenced [1] (finalize_op) notice: Operation "
        "'reboot' targeting node3 by node1 for pacemaker-controld.5@node2: OK",
    ])
    utc = datetime.datetime.fromtimestamp(since, datetime.timezone.utc)
    stamp = (utc + datetime.timedelta(seconds=4.1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    stamp2 = (utc + datetime.timedelta(seconds=5.3)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    _write(m2, [stamp + "+0000 7f 0 log [INF] : mon.node2 calling monitor election",
                stamp2 + "+0000 7f 0 log [INF] : mon.node1 is new leader, mons node1,node2"])
    tl = logs.timeline(3, [1, 2], since)
    assert tl == {"lost": 2.2, "requested": 2.9, "fenced": 7.25, "election": 4.1,
                  "new leader": 5.3}


def test_cell_is_median_min_max_n_and_ignores_missing():
    assert fencing.cell([3.0, None, 1.0, 2.0]) == "2.0 (1.0-3.0, n=3)"
    assert fencing.cell([None]) == "-"


def test_write_section_replaces_its_own_title_and_keeps_the_rest(tmp_path):
    path = str(tmp_path / "benchmarks.md")
    with open(path, "w") as f:
        f.write("# Benchmarks\n\n<!-- analysis:begin -->\nkeep me\n<!-- analysis:end -->\n")
    fencing.write_section(path, "A", "first A\n")
    fencing.write_section(path, "B", "only B\n")
    fencing.write_section(path, "A", "second A\n")
    text = open(path).read()
    assert "keep me" in text and "first A" not in text
    assert text.count("### A\n") == 1 and "second A" in text and "only B" in text
    assert text.count(fencing.BEGIN) == 1 and text.count(fencing.END) == 1
    # the main run carries the section over
    from bench import report
    carried = report.previous_fencing(path)
    assert carried.lstrip().startswith("## Fencing through Ceph") and "second A" in carried
