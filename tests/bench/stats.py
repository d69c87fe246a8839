"""Statistics and tables of the benchmarks: pure functions, no lab, no processes.

Times are seconds and memory KiB in the data; the tables show milliseconds and MiB.
A cell reads ``median (min-max)``; a ratio cell is the median of the per-pair ratios
(run i of vmceph / run i of VirtualDomain, the two run back to back) with their range.
"""

import statistics


class Summary:
    __slots__ = ("n", "median", "min", "max", "mean")

    def __init__(self, values):
        values = [float(v) for v in values]
        if not values:
            raise ValueError("no values")
        self.n = len(values)
        self.median = statistics.median(values)
        self.min = min(values)
        self.max = max(values)
        self.mean = statistics.fmean(values)

    def __repr__(self):
        return "Summary(n=%d, median=%g, min=%g, max=%g)" % (self.n, self.median, self.min,
                                                             self.max)


def summarize(values):
    """Summary of the values that are not None, or None if there are none."""
    vals = [v for v in (values or []) if v is not None]
    return Summary(vals) if vals else None


def mean(values):
    """Arithmetic mean of the values that are not None, or None."""
    vals = [float(v) for v in (values or []) if v is not None]
    return statistics.fmean(vals) if vals else None


def pair_ratios(a, b):
    """a[i] / b[i] for every pair where both exist and b[i] > 0."""
    return [x / y for x, y in zip(a, b) if x is not None and y is not None and y > 0]


def linear_fit(xs, ys):
    """(slope, intercept) of the least-squares line through the points."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need two or more points")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("all x are equal")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def segment_slopes(points):
    """Slopes between consecutive points [(x, y), ...] sorted by x: how the cost grows."""
    pts = sorted(points)
    return [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in zip(pts, pts[1:]) if x2 != x1]


def grows_at_most_linearly(points, tolerance=0.5, floor=0.0):
    """True if no later segment is steeper than the first by more than ``tolerance``
    (relative) plus ``floor`` (absolute, in y units per x unit, for noise)."""
    slopes = segment_slopes(points)
    if len(slopes) < 2:
        return True
    first = slopes[0]
    return all(s <= first * (1 + tolerance) + floor for s in slopes[1:])


def cpu_percent_of_core(cpu_seconds_per_call, vms=200, interval_s=10.0):
    """Share of one core (in %) spent when ``vms`` monitors, each costing
    ``cpu_seconds_per_call``, run every ``interval_s`` seconds."""
    return 100.0 * cpu_seconds_per_call * vms / interval_s


# ------------------------------------------------------------------ formatting

def ms(seconds, digits=1):
    return "%.*f" % (digits, seconds * 1e3)


def cell_ms(s, digits=1):
    """'12.3 (10.1-15.0)' in ms from a Summary of seconds; '-' for None."""
    if s is None:
        return "-"
    if s.n == 1:
        return ms(s.median, digits)
    return "%s (%s-%s)" % (ms(s.median, digits), ms(s.min, digits), ms(s.max, digits))


def cell_mib(s):
    """Peak memory: 'median (max)' in MiB from a Summary of KiB."""
    if s is None:
        return "-"
    if s.n == 1 or abs(s.max - s.median) < 0.05 * 1024:
        return "%.1f" % (s.median / 1024.0)
    return "%.1f (max %.1f)" % (s.median / 1024.0, s.max / 1024.0)


def cell_ratio(s):
    if s is None:
        return "-"
    if s.n == 1:
        return "%.2fx" % s.median
    return "%.2fx (%.2f-%.2f)" % (s.median, s.min, s.max)


class Row:
    """One line of the results table: a scenario measured for one agent."""

    def __init__(self, scenario, agent, wall, cpu=None, rss=None, ratio_wall=None,
                 ratio_cpu=None, note=""):
        self.scenario = scenario
        self.agent = agent
        self.wall = summarize(wall)
        self.cpu = summarize(cpu)
        self.rss = summarize(rss)
        self.ratio_wall = summarize(ratio_wall)
        self.ratio_cpu = summarize(ratio_cpu)
        self.note = note

    @property
    def n(self):
        return self.wall.n if self.wall else 0

    def cells(self):
        return [self.scenario, self.agent, str(self.n), cell_ms(self.wall), cell_ms(self.cpu),
                cell_mib(self.rss), cell_ratio(self.ratio_wall), cell_ratio(self.ratio_cpu),
                self.note]


HEADER = ["scenario", "agent", "n", "wall ms", "CPU ms (user+sys)", "peak RSS MiB",
          "wall ratio", "CPU ratio", "note"]


def render_markdown(header, rows):
    """A Markdown table; ``rows`` are lists of strings (``|`` is escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def render_text(header, rows):
    """The same table aligned for a terminal."""
    table = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[k]) for r in table) for k in range(len(header))]
    out = []
    for n, r in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


VERDICTS = {True: "met", False: "NOT met", None: "not measured", "report": "reported (no bound)"}


class Target:
    """A goal from the issue, what was measured, and whether it is met: True, False,
    None (not measured) or "report" (a figure to report, no bound given)."""

    def __init__(self, goal, measured, met):
        self.goal = goal
        self.measured = measured
        self.met = met

    def cells(self):
        return [self.goal, self.measured, VERDICTS[self.met]]


TARGET_HEADER = ["target", "measured (medians)", "verdict"]
