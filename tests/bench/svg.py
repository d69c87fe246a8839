"""Line charts as standalone SVG for docs/ (the cost curves of make bench): no plotting
library, so that `make bench` needs nothing beyond the lab's packages."""

from xml.sax.saxutils import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
W, H = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50


def _ticks(hi, n=5):
    """Round tick values from 0 to at least hi."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 1.0
    while mag > raw:
        mag /= 10.0
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks, v = [], 0.0
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _num(v):
    return ("%d" % v) if float(v).is_integer() else ("%g" % v)


def line_chart(title, xlabel, ylabel, series):
    """SVG text: one polyline with markers per series ({label: [(x, y), ...]}), linear
    axes from 0, ticks on both, the legend top left."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError("nothing to draw")
    xt = _ticks(max(x for x, _ in pts))
    yt = _ticks(max(y for _, y in pts))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def X(x):
        return LEFT + pw * x / xt[-1]

    def Y(y):
        return TOP + ph - ph * y / yt[-1]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>'
           % (LEFT, escape(title))]
    for v in yt:
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>'
                   % (LEFT, Y(v), W - RIGHT, Y(v)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>'
                   % (LEFT - 6, Y(v) + 4, _num(v)))
    for v in xt:
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                   % (X(v), H - BOTTOM + 16, _num(v)))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
               % (LEFT, TOP + ph, W - RIGHT, TOP + ph))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
               % (LEFT, TOP, LEFT, TOP + ph))
    out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
               % (LEFT + pw / 2, H - 10, escape(xlabel)))
    out.append('<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">'
               '%s</text>' % (TOP + ph / 2, TOP + ph / 2, escape(ylabel)))
    for k, (label, s) in enumerate(series.items()):
        c = COLOURS[k % len(COLOURS)]
        s = sorted(s)
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (c, " ".join("%.1f,%.1f" % (X(x), Y(y)) for x, y in s)))
        for x, y in s:
            out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s, %s'
                       '</title></circle>' % (X(x), Y(y), c, escape(label), _num(x),
                                              "%.1f" % y))
        ly = TOP + 14 + 18 * k
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                   % (LEFT + 10, ly - 4, LEFT + 34, ly - 4, c))
        out.append('<text x="%d" y="%d">%s</text>' % (LEFT + 40, ly, escape(label)))
    out.append("</svg>")
    return "\n".join(out) + "\n"
