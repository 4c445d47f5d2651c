"""The report as one HTML page: plotly's script once in the head, then sections of figures and
tables, each with a caption that says how to read it. Every string from the output (prompts,
paths, errors, reasons) is escaped; figures carry theirs as JSON, which plotly escapes."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

PLOT_CONFIG = {"displaylogo": False, "responsive": True}

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 24px 40px}
header{background:#14213d;color:#fff;padding:18px 24px}
header .inner{max-width:1180px;margin:0 auto}
header h1{margin:0 0 4px;font-size:22px} header .path{opacity:.8;font-size:13px;word-break:break-all}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-size:13px;margin-left:8px;vertical-align:middle}
.complete{background:#31a354}.in-progress{background:#e6550d}.stopped{background:#8c8c8c}
.bar{background:rgba(255,255,255,.25);border-radius:4px;height:12px;margin:10px 0 6px;overflow:hidden}
.bar div{background:#74c476;height:100%}
.facts{font-size:14px} nav{font-size:13px;margin-top:8px} nav a{color:#c6dbef;margin-right:12px}
section{background:#fff;border:1px solid #e3e5e8;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:18px;margin:0 0 8px} h3{font-size:15px;margin:16px 0 6px}
figure{margin:8px 0 14px} figcaption,.note{font-size:13px;color:#4a4a4a;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px;width:100%}
th,td{border-bottom:1px solid #eceef0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.nw{white-space:nowrap}
.sheet{display:flex;flex-wrap:wrap;gap:10px}
.sheet figure{width:168px;margin:0;font-size:11px;color:#444}
.sheet img{display:block;border:1px solid #ddd;background:#eee;image-rendering:pixelated}
.sheet figcaption{font-size:11px;overflow:hidden;text-overflow:ellipsis;max-height:3.9em}
code{font-size:12px;background:#f3f4f6;padding:1px 4px;border-radius:3px}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def table(headers: list[str], rows: list[list], numeric: set[int] | None = None,
          nowrap: set[int] | None = None) -> str:
    """Rows of cells (escaped); `numeric` columns align right, `nowrap` ones never break a line."""
    numeric, nowrap = numeric or set(), nowrap or set()

    def cell(i: int, value) -> str:
        kind = " ".join(name for name, columns in (("num", numeric), ("nw", nowrap)) if i in columns)
        return f"<td class=\"{kind}\">{esc(value)}</td>" if kind else f"<td>{esc(value)}</td>"
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note(text: str) -> str:
    return f"<p class=\"note\">{esc(text)}</p>"


@dataclass
class Page:
    """Sections in order; figures are numbered so that every plot has its own div id."""

    title: str
    sections: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (anchor, heading, parts)
    _figures: int = 0

    def section(self, anchor: str, heading: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((anchor, heading, parts))
        return parts

    def figure(self, fig, caption: str, name: str) -> str:
        """A plot with its caption; `name` becomes part of its div id (the tests look plots up by it)."""
        self._figures += 1
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                          div_id=f"plot-{self._figures}-{name}")
        return f"<figure class=\"plot\" data-plot=\"{esc(name)}\">{div}<figcaption>{esc(caption)}</figcaption></figure>"

    def render(self, header: str) -> str:
        from plotly.offline import get_plotlyjs

        links = "".join(f"<a href=\"#{esc(anchor)}\">{esc(heading)}</a>" for anchor, heading, _ in self.sections)
        body = "".join(f"<section id=\"{esc(anchor)}\"><h2>{esc(heading)}</h2>{''.join(parts)}</section>"
                       for anchor, heading, parts in self.sections)
        made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                f"<title>{esc(self.title)}</title><style>{STYLE}</style>"
                f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
                f"<header><div class=\"inner\">{header}<nav>{links}</nav></div></header>"
                f"<main>{body}<p class=\"note\">Report made {esc(made)}.</p></main></body></html>")
