"""The report's plots, as plotly figures built from the pure series (timeline.py, series.py).

Colours follow the stage: a stage's busy time in its full colour, its sending in a lighter shade
and its waiting in a pale one, so a timeline reads as "which stage, and was it working".
"""

from __future__ import annotations

import numpy as np

from onepiece_hpc.report.series import Latency, Lines, StageUse, Throughput
from onepiece_hpc.report.timeline import ACTIVITIES, LOADING, MOVING, Bars, Grid

# busy, sending, waiting shades of each stage's colour, in the pipeline's order
SHADES = (("#1f77b4", "#6baed6", "#c6dbef"), ("#e6550d", "#fd8d3c", "#fdd0a2"), ("#31a354", "#74c476", "#c7e9c0"),
          ("#756bb1", "#9e9ac8", "#dadaeb"), ("#c51b8a", "#f768a1", "#fcc5c0"), ("#8c6d31", "#bd9e39", "#e7cb94"))
OTHER = {MOVING: "#111111", LOADING: "#8c8c8c"}
FONT = dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=12)


def _layout(fig, height: int, **more) -> None:
    fig.update_layout(height=height, margin=dict(l=70, r=20, t=30, b=45), font=FONT, template="plotly_white",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), **more)


def label_colours(stages: list[str], labels: list[str]) -> dict[str, str]:
    """A colour for each timeline label ('denoise busy', 'moving', ...)."""
    colours = {}
    for number, stage in enumerate(stages):
        for activity, shade in zip(ACTIVITIES, SHADES[number % len(SHADES)]):
            colours[f"{stage} {activity}"] = shade
    colours.update(OTHER)
    for label in labels:  # a stage the run's order does not name (a record from another layout)
        colours.setdefault(label, "#bbbbbb")
    return colours


def label_order(stages: list[str], labels: list[str]) -> list[str]:
    ordered = [f"{stage} {activity}" for stage in stages for activity in ACTIVITIES] + [MOVING, LOADING]
    return [label for label in ordered if label in labels] + sorted(set(labels) - set(ordered))


def progress_figure(labels: list[str], shares: list[float], texts: list[str]):
    """One bar per shard: the share of its work done."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[100 * share for share in shares], y=labels, orientation="h", text=texts,
                           textposition="auto", marker_color="#31a354", hovertemplate="%{y}: %{text}<extra></extra>"))
    _layout(fig, min(110 + 24 * len(labels), 1400), showlegend=False)
    fig.update_xaxes(range=[0, 100], title="work done (%)")
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def throughput_figure(series: Throughput, moves_unix: list[float] | None = None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    edges = _unix_to_datetimes(series.edges)  # a step a bin, from its start to its end
    fig.add_trace(go.Scatter(x=edges, y=np.r_[series.items_per_s, series.items_per_s[-1:]], mode="lines",
                             line_shape="hv", name="items/s", line_color="#1f77b4"), row=1, col=1)
    fig.add_trace(go.Scatter(x=edges, y=np.r_[series.work_per_s, series.work_per_s[-1:]], mode="lines",
                             line_shape="hv", name="work/s (MP-fwd/s)", line_color="#e6550d"), row=2, col=1)
    for number, (lo, hi, items, work) in enumerate(series.sessions):
        span = _unix_to_datetimes(np.array([lo, hi]))
        for row, value, colour in ((1, items, "#08306b"), (2, work, "#7f2704")):
            fig.add_trace(go.Scatter(x=span, y=[value, value], mode="lines", line=dict(dash="dash", color=colour),
                                     name="mean rate of the run" if row == 1 else "mean work rate",
                                     showlegend=number == 0, legendgroup=f"mean{row}",
                                     hovertemplate="mean %{y:.3g}/s<extra></extra>"), row=row, col=1)
    for number, at in enumerate(moves_unix or []):
        when = str(_unix_to_datetimes(np.array([at]))[0])
        for row in (1, 2):
            fig.add_shape(type="line", x0=when, x1=when, y0=0, y1=1, yref="y domain", row=row, col=1,
                          line=dict(color="#d62728", width=1, dash="dot"), name="a rank moved",
                          showlegend=number == 0 and row == 1, legendgroup="moves")
    _layout(fig, 430)
    fig.update_yaxes(title="items/s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="MP-forwards/s", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title="time (UTC)", row=2, col=1)
    return fig


def _unix_to_datetimes(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values) * 1e3).astype("datetime64[ms]")


def timeline_figure(bars: Bars | None, grid: Grid | None, stages: list[str], moves: np.ndarray):
    """Ranks down, seconds across; a move is a marker where its rank was told to go."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if grid is not None:
        labels = grid.labels
        names = [f"ranks {a}-{b}" if a != b else f"rank {a}" for a, b in grid.row_ranks]
        colours = label_colours(stages, labels)
        _grid_traces(fig, grid, names, [colours[label] for label in labels])
        for label in label_order(stages, labels):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=dict(size=10, color=colours[label],
                                     symbol="square"), name=label))
        rows = len(names)
    else:
        labels = sorted(set(bars.label.tolist()))
        colours = label_colours(stages, labels)
        names = [f"rank {int(rank)}" for rank in bars.rank]
        for label in label_order(stages, labels):
            mine = bars.label == label
            fig.add_trace(go.Bar(
                x=bars.end[mine] - bars.start[mine], base=bars.start[mine], y=np.array(names, dtype=object)[mine],
                orientation="h", name=label, marker=dict(color=colours[label], line_width=0),
                customdata=np.c_[bars.start[mine], bars.end[mine]],
                hovertemplate=f"%{{y}}: {label}<br>%{{customdata[0]:.1f}} s to %{{customdata[1]:.1f}} s"
                              "<extra></extra>"))
        rows = len(set(names))
    if len(moves):
        fig.add_trace(go.Scatter(
            x=moves["t"], y=[_row_name(int(rank), grid) for rank in moves["rank"]], mode="markers",
            marker=dict(symbol="triangle-right", size=14, color="#ffd92f", line=dict(width=1.5, color="#111111")),
            name="move ordered",
            text=[f"{_text(m['source'])} -> {_text(m['target'])}: {_text(m['reason'])}" for m in moves],
            hovertemplate="%{y} at %{x:.1f} s: %{text}<extra></extra>"))
    _layout(fig, min(140 + 26 * rows, 900), barmode="overlay", bargap=0.25)
    fig.update_xaxes(title="seconds since the run started", rangemode="tozero")
    fig.update_yaxes(type="category", autorange="reversed",
                     categoryorder="array", categoryarray=sorted(set(names), key=_rank_key))
    return fig


def _rank_key(name: str) -> int:
    return int(name.split()[1].split("-")[0])


def _row_name(rank: int, grid: Grid | None) -> str:
    if grid is None:
        return f"rank {rank}"
    for a, b in grid.row_ranks:
        if a <= rank <= b:
            return f"ranks {a}-{b}" if a != b else f"rank {a}"
    return f"rank {rank}"


def _grid_traces(fig, grid: Grid, names: list[str], colours: list[str]) -> None:
    """The grid as one heatmap whose colour scale has one flat step per label."""
    import plotly.graph_objects as go

    count = max(len(colours), 1)
    scale = []
    for number, colour in enumerate(colours):
        scale += [[number / count, colour], [(number + 1) / count, colour]]
    z = np.where(grid.cells >= 0, grid.cells, np.nan).astype(float)
    fig.add_trace(go.Heatmap(z=z, x=(grid.edges[:-1] + grid.edges[1:]) / 2, y=names, zmin=-0.5, zmax=count - 0.5,
                             colorscale=scale or [[0, "#ffffff"], [1, "#ffffff"]], showscale=False,
                             text=[[grid.labels[c] if c >= 0 else "" for c in row] for row in grid.cells],
                             hovertemplate="%{y} at %{x:.0f} s: %{text}<extra></extra>"))


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def stage_use_figure(uses: list[StageUse]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.14,
                        subplot_titles=("how the stage's ranks spent their time", "mean service time per unit"))
    stages = [use.stage for use in uses]
    for at, name in enumerate((*ACTIVITIES, "other")):
        values = [100 * getattr(use, name) for use in uses]
        colours = [SHADES[n % len(SHADES)][at] if at < 3 else "#d9d9d9" for n in range(len(uses))]
        fig.add_trace(go.Bar(x=values, y=stages, orientation="h", name=name, marker_color=colours,
                             text=[f"{name} {v:.0f}%" if v >= 12 else "" for v in values], textposition="inside",
                             insidetextanchor="middle", textangle=0,
                             hovertemplate=f"%{{y}} {name}: %{{x:.1f}}%<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=[use.mean_service_s for use in uses], y=stages, orientation="h", showlegend=False,
                         marker_color=[SHADES[n % len(SHADES)][0] for n in range(len(uses))],
                         text=[f"{use.mean_service_s:.3g} s" for use in uses], textposition="outside",
                         textangle=0, cliponaxis=False,
                         hovertemplate="%{y}: %{x:.4g} s a unit<extra></extra>"), row=1, col=2)
    _layout(fig, 140 + 46 * len(uses), barmode="stack", showlegend=False)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title="% of the stage's rank-seconds", range=[0, 100], row=1, col=1)
    longest = max((use.mean_service_s for use in uses if use.mean_service_s == use.mean_service_s), default=1.0)
    fig.update_xaxes(title="seconds", range=[0, 1.3 * longest or 1.0], row=1, col=2)
    return fig


def lines_figure(lines: Lines, y_title: str, colours: dict[str, str] | None = None, step: bool = False,
                 from_zero: bool = True):
    """Series over seconds since the run started; bands (low..high) drawn as shaded areas."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, (low, high) in lines.bands.items():
        fig.add_trace(go.Scatter(x=np.r_[lines.t, lines.t[::-1]], y=np.r_[high, low[::-1]], fill="toself",
                                 line_width=0, opacity=0.25, name=name, hoverinfo="skip",
                                 fillcolor=(colours or {}).get(name.rsplit(" ", 1)[0], "#999999")))
    for name, values in lines.series.items():
        colour = (colours or {}).get(name.rsplit(" ", 1)[0] if lines.bands else name)
        fig.add_trace(go.Scatter(x=lines.t, y=values, mode="lines", name=name, connectgaps=False,
                                 line=dict(color=colour, width=1.6, shape="hv" if step else "linear")))
    _layout(fig, 330)
    fig.update_xaxes(title="seconds since the run started")
    fig.update_yaxes(title=y_title, rangemode="tozero" if from_zero else "normal")
    return fig


def latency_figure(latency: Latency):
    import plotly.graph_objects as go

    middle = (latency.edges[:-1] + latency.edges[1:]) / 2
    width = float(latency.edges[1] - latency.edges[0])
    fig = go.Figure(go.Bar(x=middle, y=latency.counts, width=width, marker_color="#6baed6", name="count",
                           hovertemplate="%{x:.3g} s: %{y}<extra></extra>"))
    for step, (name, value, dash) in enumerate((("median", latency.median_s, "solid"), ("p90", latency.p90_s, "dash"),
                                                ("p99", latency.p99_s, "dot"))):
        fig.add_shape(type="line", x0=value, x1=value, y0=0, y1=1, yref="paper",
                      line=dict(color="#d62728", dash=dash, width=1.5))
        fig.add_annotation(x=value, y=1.0 - 0.09 * step, yref="paper", text=f"{name} {value:.3g} s",
                           showarrow=False, xanchor="left", xshift=4, font=dict(color="#d62728"))
    _layout(fig, 320, showlegend=False, bargap=0.05)
    what = "dispatch to commit of a unit" if latency.measured else "gap between commits"
    fig.update_xaxes(title=f"seconds ({what})", range=[float(latency.edges[0]) - width,
                                                         float(latency.edges[-1]) + 2 * width])
    fig.update_yaxes(title="units" if latency.measured else "gaps")
    return fig
