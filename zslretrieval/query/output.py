"""Query results for people (table, HTML gallery) and for programs (JSON, JSON lines, CSV)."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from .results import QueryResult

THUMB_PX = 160


def describe_resolved(result: QueryResult) -> str:
    """One line saying how the query was understood, e.g. ``stripes=1, water=0.7``."""
    r = result.resolved
    # scores are corrected per image when the model (or the general model) chose a correction: say so
    tail = f" (scores: {r['correction']} correction)" if r.get("correction") else ""
    fused = r.get("fusion")
    if fused:   # a model's ranking fused with the general model's (--general-weight)
        tail += (f"; fused with {fused['general']['model']} on "
                 f"{' + '.join(repr(t) for t in fused['general']['texts'])}: {fused['score']}")
    how = r.get("understood_as")
    if how:
        said = (f"text {r['text']!r}" if "text" in r else f"class {r['class']}" if "class" in r
                else ", ".join(f"{a['name']}={a['weight']:g}" for a in r.get("attributes", [])))
        line = f"{said} -> {how['model']} on {' + '.join(repr(t) for t in how['texts'])}"
        defs = [d for ds in how.get("glosses") or [] for d in ds]
        if defs:
            line += " with WordNet: " + " / ".join(repr(d) for d in defs)
        anchored = [a for a in how.get("anchors") or [] if a]
        if anchored:
            line += "; anchored on ImageNet " + " / ".join(
                f"{', '.join(a['classes'])} ({a['rule']}, share {a['weight']:g})" for a in anchored)
        near = how.get("nearest_imagenet")
        if near:
            line += "; looks like ImageNet " + ", ".join(f"{c['name']} ({c['cosine']:.2f})" for c in near)
        return line + tail
    if "class" in r:
        return f"class {r['class']}{tail}"
    if "attributes" in r:
        return (", ".join(f"{a['name']}={a['weight']:g}" for a in r["attributes"]) or "(all zero)") + tail
    if "image" in r:
        return f"image {r['image']}"
    return ""


def format_table(results: list[QueryResult]) -> str:
    """Plain-text table per query: rank, score, path, known label."""
    blocks = []
    for res in results:
        lines = [f"query: {res.query}", f"resolved: {describe_resolved(res)}"]
        fb, flt = res.resolved.get("feedback"), res.resolved.get("filter")
        if fb:
            lines.append(f"refined: {len(fb['more_like'])} right, {len(fb['less_like'])} wrong ({fb['rule']})")
        if flt:
            lines.append("only: " + ", ".join(f"{k} {v}" for k, v in flt.items()))
        rel = any(h.relevance is not None for h in res.hits)   # --relevance / --min-score: its own column
        rows = [("rank", "score", "label", "path") if not rel else ("rank", "score", "relev", "label", "path")] + [
            (str(h.rank), f"{h.score:.4f}", *((f"{h.relevance:.3f}",) if rel else ()),
             h.label if h.label is not None else "-", h.path) for h in res.hits]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
        for r in rows:
            cells = [f"{v:>{w}}" for v, w in zip(r[:-2], widths)] + [f"{r[-2]:<{widths[-1]}}", r[-1]]
            lines.append("  ".join(cells).rstrip())
        if not res.hits:
            lines.append("(no results: the index is empty)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def results_to_json(results: list[QueryResult], *, index: str, metric: str, batch: bool) -> str:
    """One JSON object: the query, its resolved attributes/class with weights, and the results list.

    For a batch, one object ``{"index", "metric", "queries": [...]}`` holding one such object per query.
    """
    head: dict[str, Any] = {"index": index, "metric": metric}
    if batch:
        body = {**head, "queries": [r.to_dict() for r in results]}
    else:
        body = {**head, **results[0].to_dict()}
    return json.dumps(body, indent=2)


FORMATS = ("table", "json", "jsonl", "csv")
# One row per hit in the line formats: which query (its position in the batch, kind, text), then the hit.
ROW_FIELDS = ("query", "kind", "text", "rank", "id", "score", "relevance", "label", "path")


def result_rows(results: list[QueryResult]) -> list[dict[str, Any]]:
    """Every hit of every query as one flat dict with :data:`ROW_FIELDS` (``relevance`` None when not asked)."""
    return [{"query": q, "kind": r.query.kind, "text": r.query.text, "rank": h.rank, "id": h.id, "score": h.score,
             "relevance": h.relevance, "label": h.label, "path": h.path}
            for q, r in enumerate(results) for h in r.hits]


def results_to_jsonl(results: list[QueryResult]) -> str:
    """JSON lines: one object per hit (:data:`ROW_FIELDS`), queries in order, hits in rank order."""
    return "\n".join(json.dumps(row) for row in result_rows(results))


def results_to_csv(results: list[QueryResult]) -> str:
    """CSV with a header row (:data:`ROW_FIELDS`), one row per hit; empty cells for missing values."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in result_rows(results):
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue().rstrip("\n")


def format_results(results: list[QueryResult], fmt: str, *, index: str, metric: str, batch: bool) -> str:
    """``results`` in one of :data:`FORMATS` (``table`` for people, the others for programs)."""
    if fmt == "json":
        return results_to_json(results, index=index, metric=metric, batch=batch)
    if fmt == "jsonl":
        return results_to_jsonl(results)
    if fmt == "csv":
        return results_to_csv(results)
    if fmt == "table":
        return format_table(results)
    from ..errors import InvalidInputError
    raise InvalidInputError(f"output format {fmt!r}; accepted: {', '.join(FORMATS)}")


def thumbnail_data_uri(path: str | os.PathLike, size: int = THUMB_PX) -> str | None:
    """A JPEG thumbnail as a ``data:`` URI, or None when ``path`` is not a readable image file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        return None
    try:
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em} h2{font-size:1.05em;margin:1.6em 0 .2em} .resolved{color:#555;margin:0 0 .6em}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:170px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:5px}
figure img,.ph{width:160px;height:160px;object-fit:contain;display:block;border-radius:4px}
.ph{background:#e4e4e4;color:#777;display:flex;align-items:center;justify-content:center;font-size:.8em;text-align:center}
figcaption{font-size:.75em;word-break:break-all;margin-top:4px} .lab{font-weight:600}
"""


def render_html(results: list[QueryResult], *, index: str, metric: str) -> str:
    """A self-contained gallery page: inline base64 thumbnails, placeholders for entries without an image file."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>zslr query: {e(index)}</title><style>{_CSS}</style></head><body>",
             f"<h1>zslr query &mdash; index {e(index)} (metric {e(metric)})</h1>"]
    for res in results:
        parts.append(f"<section><h2>{e(str(res.query))}</h2>")
        parts.append(f'<p class="resolved">resolved: {e(describe_resolved(res))}</p><div class="grid">')
        for h in res.hits:
            uri = thumbnail_data_uri(h.path) if h.path else None
            pic = (f'<img src="{uri}" alt="{e(h.path)}">' if uri
                   else f'<div class="ph">no image file<br>id {h.id}</div>')
            label = e(h.label) if h.label is not None else "&ndash;"
            parts.append(f"<figure>{pic}<figcaption>#{h.rank} &middot; {h.score:.4f} &middot; "
                         f'<span class="lab">{label}</span><br>{e(h.path)}</figcaption></figure>')
        if not res.hits:
            parts.append("<p>(no results)</p>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(results: list[QueryResult], path: str | os.PathLike, *, index: str, metric: str) -> Path:
    """Write :func:`render_html` atomically to ``path``."""
    p = Path(path)
    page = render_html(results, index=index, metric=metric).encode("utf-8")
    atomic_write(p, lambda f: f.write(page))
    return p
