"""The plotly figures of Explore: the chunk map (with a question and its passages) and cosine heatmaps.

The app shows them in gr.Plot; the CLI writes the map as one self-contained HTML file (plotly.js inline)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from rag.explore.projection import ChunkMap, MapPoint, PlacedQuestion

# SVG draws each point as an element (hover and clicks are exact, tests can find points); WebGL keeps a large map
# smooth. Up to this many points the map is SVG.
SVG_MAX_POINTS = 3_000
# <extra></extra>: no trace name beside the label
HOVER = "<b>%{customdata[1]}</b> %{customdata[2]}<br>%{customdata[3]}<extra></extra>"
SHORT_LABEL_CHARS = 40


def _customdata(points: Sequence[MapPoint]) -> list[list]:
    # escaped: plotly renders a few tags in hover labels, and a passage's text must show as itself
    return [[p.chunk_id, html.escape(p.document), html.escape(p.where), html.escape(p.snippet)] for p in points]


def _by_document(points: Sequence[MapPoint]) -> dict[str, list[MapPoint]]:
    groups: dict[str, list[MapPoint]] = {}
    for p in points:
        groups.setdefault(p.document, []).append(p)
    return dict(sorted(groups.items()))


def map_figure(chunk_map: ChunkMap, placed: PlacedQuestion | None = None, height: int = 560) -> go.Figure:
    """One trace a document (its colour and legend entry); the question as a star, its passages ringed."""
    scatter = go.Scatter if len(chunk_map.points) <= SVG_MAX_POINTS else go.Scattergl
    figure = go.Figure()
    for document, points in _by_document(chunk_map.points).items():
        figure.add_trace(scatter(
            x=[p.x for p in points], y=[p.y for p in points], mode="markers", name=document,
            customdata=_customdata(points), hovertemplate=HOVER, marker={"size": 7, "opacity": 0.75}))
    if placed is not None:
        _add_question(figure, placed)
    figure.update_layout(
        title={"text": html.escape(chunk_map.note()), "font": {"size": 13}}, height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"title": {"text": "Document"}},
        xaxis={"showticklabels": False, "title": None}, yaxis={"showticklabels": False, "title": None},
        hovermode="closest", clickmode="event", dragmode="pan", plot_bgcolor="white")
    return figure


def _add_question(figure: go.Figure, placed: PlacedQuestion) -> None:
    for hit in placed.hits:  # a faint line from the question to each of its passages
        figure.add_trace(go.Scatter(x=[placed.x, hit.x], y=[placed.y, hit.y], mode="lines", showlegend=False,
                                    hoverinfo="skip", line={"color": "rgba(220,38,38,0.35)", "dash": "dot"}))
    figure.add_trace(go.Scatter(
        x=[p.x for p in placed.hits], y=[p.y for p in placed.hits], mode="markers", name="Retrieved passages",
        customdata=_customdata(placed.hits),
        text=[f"{score:.3f}" for score in placed.scores],
        hovertemplate="<b>Retrieved</b> (score %{text})<br>" + HOVER,
        marker={"size": 16, "symbol": "circle-open", "color": "#dc2626", "line": {"width": 3}}))
    figure.add_trace(go.Scatter(
        x=[placed.x], y=[placed.y], mode="markers", name="Question", hovertemplate="%{text}<extra></extra>",
        text=[f"<b>Question</b>: {html.escape(_short(placed.question, 120))}"],
        marker={"size": 20, "symbol": "star", "color": "#111827"}))


def _short(text: str, limit: int = SHORT_LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def heatmap_figure(matrix: np.ndarray, labels: Sequence[str], title: str, height: int = 420) -> go.Figure:
    """A cosine matrix as a heatmap, each cell written out (two decimals)."""
    short = [f"{i + 1}. {html.escape(_short(label))}" for i, label in enumerate(labels)]
    values = np.round(np.asarray(matrix, dtype=float), 3)
    figure = go.Figure(go.Heatmap(
        z=values, x=short, y=short, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
        text=[["n/a" if np.isnan(v) else f"{v:.2f}" for v in row] for row in values], texttemplate="%{text}",
        hovertemplate="%{y}<br>%{x}<br>cosine %{z:.3f}<extra></extra>"))
    figure.update_layout(title={"text": html.escape(title), "font": {"size": 13}}, height=height,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10}, yaxis={"autorange": "reversed"})
    return figure


def standalone_html(figure: go.Figure, title: str) -> str:
    """A whole HTML page that opens anywhere offline: plotly.js is written into it, not linked."""
    return figure.to_html(include_plotlyjs=True, full_html=True, config={"responsive": True},
                          default_width="100%").replace("<head>", f"<head><title>{html.escape(title)}</title>", 1)
