"""The statistics, ratios and tables of `make bench` (tests/bench/stats.py). The benchmark
itself measures and is not part of `make test`; only its arithmetic is checked here."""

import pytest

from bench import stats


def test_summary_median_min_max_mean():
    s = stats.summarize([0.030, 0.010, 0.020, None, 0.040])
    assert (s.n, s.min, s.max) == (4, 0.010, 0.040)
    assert s.median == pytest.approx(0.025)
    assert s.mean == pytest.approx(0.025)
    assert stats.summarize([]) is None and stats.summarize([None]) is None
    assert stats.mean([None, 1, 3]) == 2 and stats.mean([]) is None


def test_pair_ratios_pair_by_index_and_skip_missing():
    assert stats.pair_ratios([2.0, 3.0, 4.0, 1.0], [1.0, 0.0, 2.0, None]) == [2.0, 2.0]
    assert stats.pair_ratios([1.0], []) == []


def test_linear_fit_and_segments():
    xs, ys = [1, 4, 16], [0.5 + 0.03 * x for x in (1, 4, 16)]
    slope, intercept = stats.linear_fit(xs, ys)
    assert slope == pytest.approx(0.03) and intercept == pytest.approx(0.5)
    assert stats.segment_slopes([(16, 1.0), (1, 0.1), (4, 0.4)]) == pytest.approx([0.1, 0.05])
    with pytest.raises(ValueError):
        stats.linear_fit([1], [1.0])
    with pytest.raises(ValueError):
        stats.linear_fit([2, 2], [1.0, 3.0])


def test_linear_growth_check():
    linear = [(1, 0.5), (4, 0.59), (16, 0.95)]          # 30 ms/disk throughout
    assert stats.grows_at_most_linearly(linear)
    quadratic = [(1, 0.5), (4, 0.6), (16, 3.0)]          # 33 then 200 ms/disk
    assert not stats.grows_at_most_linearly(quadratic)
    noisy_flat = [(1, 0.5), (4, 0.5), (16, 0.6)]         # 0 then 8 ms/disk: within the floor
    assert stats.grows_at_most_linearly(noisy_flat, floor=0.010)
    assert stats.grows_at_most_linearly([(1, 0.5), (4, 0.6)])


def test_cpu_share_of_200_vms():
    # 200 monitors every 10 s = 20 per second; 40 ms each = 0.8 s per second = 80 % of a core
    assert stats.cpu_percent_of_core(0.040, vms=200, interval_s=10) == pytest.approx(80.0)


def test_cells():
    s = stats.summarize([0.0123, 0.0101, 0.0150])
    assert stats.cell_ms(s) == "12.3 (10.1-15.0)"
    assert stats.cell_ms(stats.summarize([0.5]), 0) == "500"
    assert stats.cell_ms(None) == "-"
    assert stats.cell_mib(stats.summarize([20480, 20500])) == "20.0"
    assert stats.cell_mib(stats.summarize([20480, 30720])) == "25.0 (max 30.0)"
    assert stats.cell_ratio(stats.summarize([0.8, 0.9, 1.0])) == "0.90x (0.80-1.00)"
    assert stats.cell_ratio(None) == "-"


def test_row_cells_and_tables():
    row = stats.Row("monitor", "vmceph", [0.04, 0.05, 0.045], [0.03, 0.04, 0.035],
                    [27000, 28000, 27500], ratio_wall=[0.8, 0.9, 0.85], note="a|b")
    cells = row.cells()
    assert len(cells) == len(stats.HEADER) and cells[2] == "3"
    assert cells[3] == "45.0 (40.0-50.0)" and cells[6] == "0.85x (0.80-0.90)"
    assert cells[7] == "-"
    md = stats.render_markdown(stats.HEADER, [cells])
    lines = md.splitlines()
    assert lines[0].startswith("| scenario | agent |") and set(lines[1]) <= set("|-")
    assert "a\\|b" in lines[2] and lines[2].count(" | ") == len(stats.HEADER) - 1
    text = stats.render_text(["a", "bb"], [["xxx", "y"]]).splitlines()
    assert text == ["a    bb", "---  --", "xxx  y"]


def test_targets_verdicts():
    assert stats.Target("g", "1.0x", True).cells()[2] == "met"
    assert stats.Target("g", "1.3x", False).cells()[2] == "NOT met"
    assert stats.Target("g", "-", None).cells()[2] == "not measured"
    assert stats.Target("g", "90 %", "report").cells()[2].startswith("reported")
