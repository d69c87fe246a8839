"""The monitor cost curve of `make bench` (tests/bench/scenarios.py bench_curve, curve_rows,
report.charts, svg.line_chart): its arithmetic and its pictures, from measurements made up
here (the measuring itself runs on the lab, in make bench, not in make test)."""

import xml.etree.ElementTree as ET

import pytest

from bench import report, svg
from bench.scenarios import OURS, VD, Bench, Plan, Total


class M:
    """A Measurement's fields that the curve reads."""

    def __init__(self, cpu, server_cpu=0.001, wall=0.05):
        self.cpu, self.server_cpu, self.wall, self.maxrss_kib = cpu, server_cpu, wall, 1000


class Lab:
    state_dir = "/nonexistent"


def bench_with(rounds):
    b = Bench(Lab(), None, Plan(curve=(1, 10), curve_rounds=2), log=lambda *_: None)
    for (n, who), per_vm_cpus in rounds.items():
        for cpus in per_vm_cpus:
            b.add(("curve %d" % n, who), Total([M(c) for c in cpus]))
    return b


def test_a_round_is_one_interval_of_every_vm_and_the_ratio_pairs_rounds():
    b = bench_with({
        (1, OURS): [[0.030], [0.034]], (1, VD): [[0.060], [0.050]],
        (10, OURS): [[0.030] * 10, [0.030] * 10], (10, VD): [[0.050] * 10, [0.060] * 10]})
    rows, points = b.curve_rows(interval_s=10.0)
    assert [r[0] for r in rows] == ["1", "10"]
    # 10 VMs at 30 ms each per 10 s = 0.3 s / 10 s = 3 % of one core
    assert points[OURS] == [(1, pytest.approx(0.32)), (10, pytest.approx(3.0))]
    assert points[VD] == [(1, pytest.approx(0.55)), (10, pytest.approx(5.5))]
    ten = rows[1]
    assert ten[1] == "30.0" and ten[2] == "3.0 %"          # per monitor ms, % core
    assert ten[3] == "3.1 %"                                # + libvirtd's 1 ms each
    # paired per round: 0.3/0.5 and 0.3/0.6 -> median 0.55
    assert ten[-1] == "0.55x"


def test_a_count_measured_for_one_agent_only_says_so():
    rows, points = bench_with({(10, OURS): [[0.02] * 10]}).curve_rows()
    # 10 x (20 ms + libvirtd 1 ms) / 10 s
    assert rows == [["10", "20.0", "2.0 %", "2.1 %", "-", "-", "-", "-"]]
    assert points[VD] == []


def test_total_sums_libvirtd_only_when_every_run_has_it():
    assert Total([M(0.01, 0.002), M(0.01, 0.003)]).server_cpu == pytest.approx(0.005)
    assert Total([M(0.01, 0.002), M(0.01, None)]).server_cpu is None


def test_the_chart_is_svg_with_one_line_per_agent_and_every_point():
    b = bench_with({(1, OURS): [[0.03]], (1, VD): [[0.05]],
                    (10, OURS): [[0.03] * 10], (10, VD): [[0.05] * 10]})
    charts = report.charts(b)
    doc = ET.fromstring(charts[report.MONITOR_CURVE_SVG])
    ns = "{http://www.w3.org/2000/svg}"
    assert len(doc.findall(ns + "polyline")) == 2
    assert len(doc.findall(ns + "circle")) == 4
    texts = [t.text for t in doc.iter(ns + "text")]
    assert OURS in texts and VD in texts


def test_points_are_placed_by_value():
    text = svg.line_chart("t", "x", "y", {"a": [(0, 0), (10, 5)]})
    doc = ET.fromstring(text)
    line = doc.find("{http://www.w3.org/2000/svg}polyline").get("points").split()
    (x0, y0), (x1, y1) = [tuple(map(float, p.split(","))) for p in line]
    assert x1 > x0 and y1 < y0            # right and up
    with pytest.raises(ValueError):
        svg.line_chart("t", "x", "y", {"a": []})


def test_ticks_cover_the_data():
    for hi in (0.3, 1, 7, 55, 130, 1e4):
        t = svg._ticks(hi)
        assert t[0] == 0 and t[-1] >= hi and len(t) <= 12
