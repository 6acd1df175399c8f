"""The dashboard's charts: server-rendered SVG from pygal, inlined into the page without any script.

pygal writes a ``<script>`` with the chart's config (and, unless ``js=[]``, script tags loading its
tooltips from the network) into every SVG.  The page must run nothing and fetch nothing, so the chart is
rendered to an element tree and every script element and comment is removed before it is serialised;
text such as branch names is escaped by the XML serialiser.
"""

from __future__ import annotations

from datetime import datetime
from xml.etree import ElementTree as ET

import pygal
from pygal.style import Style

STYLE = Style(background="white", plot_background="#f8f9fa", font_family="sans-serif",
              colors=("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"))
COMMON = {"js": [], "disable_xml_declaration": True, "style": STYLE, "width": 640, "height": 320,
          "explicit_size": True, "legend_at_bottom": True, "truncate_legend": 40, "dots_size": 3,
          "print_values": False, "no_data_text": "no data yet"}


def _clean_svg(chart) -> str:
    root = chart.render_tree()
    for parent in list(root.iter()):
        for child in list(parent):
            if not isinstance(child.tag, str) or child.tag.rsplit("}", 1)[-1] in ("script", "foreignObject"):
                parent.remove(child)
    return ET.tostring(root, encoding="unicode")


def time_format(points: list[datetime]) -> str:
    """Labels fine enough to tell the points apart, and no finer."""
    span = (max(points) - min(points)).total_seconds() if points else 0
    return "%H:%M:%S" if span < 3600 else "%m-%d %H:%M" if span < 3 * 86400 else "%Y-%m-%d"


def build_duration_svg(series: dict[str, list[tuple[datetime, float]]]) -> str:
    """Minutes per finished branch build, one line per branch, over the builds' finishing time."""
    fmt = time_format([t for points in series.values() for t, _ in points])
    chart = pygal.DateTimeLine(title="Build duration per branch", x_title="finished (UTC)", y_title="minutes",
                               x_label_rotation=20, x_value_formatter=lambda d: d.strftime(fmt),
                               include_x_axis=True, **COMMON)
    for branch, points in sorted(series.items()):
        if points:
            chart.add(branch, points)
    return _clean_svg(chart)


def bisect_steps_svg(timelines: list[tuple[str, list[tuple[float, int]]]]) -> str:
    """Each bisect's finished steps over the minutes since it started (steeper = faster)."""
    most = max((n for _, points in timelines for _, n in points), default=0)
    # whole steps on the axis; pygal cannot place given labels on a chart without data
    labels = {"y_labels": list(range(0, most + 1))} if most else {}
    chart = pygal.XY(title="Bisect steps over time", x_title="minutes since the bisect started",
                     y_title="steps done", stroke=True, **labels, **COMMON)
    for label, points in timelines:
        chart.add(label, points)
    return _clean_svg(chart)
