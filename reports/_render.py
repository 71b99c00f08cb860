"""The report as a list of blocks, and two renderers (HTML, Markdown) that escape every string they print.

Prose blocks are escaped as a whole, so run-directory strings (trial ids, hyperparameter names and values,
the study name) can be put in them freely; generated text goes in `Code` blocks: <pre> in HTML, a fence
longer than any backtick run of the text in Markdown. `Details` groups blocks under a title that a reader
opens when they want them: a plain <details> element in HTML (no script), a titled section in Markdown.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str
    lead: bool = False  # the answer, set apart


@dataclass(frozen=True)
class Table:
    df: pd.DataFrame


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Details:
    """A titled group of blocks, collapsed in HTML until the reader opens it (e.g. how a number was computed).

    `level` is the heading level of the title in Markdown; headings inside should be deeper.
    """

    title: str
    blocks: tuple[Block, ...]
    level: int = 2
    open: bool = False


Block = Heading | Para | Table | Figure | Code | Details

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_MD_LINE_START = re.compile(r"^(\s*|\s*\d+)([#+\-=>]|(?<=\d)[.)])")


def md_escape(s: object) -> str:
    """Inline Markdown text: one line, Markdown-active characters backslash-escaped (links, emphasis, code,
    HTML and entities anywhere; headings, lists and quotes at the start)."""
    s = _MD_SPECIAL.sub(r"\\\1", re.sub(r"[\r\n\t\x00]+", " ", str(s)))
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s)


def md_fence(text: str) -> str:
    """A fenced code block whose fence is longer than any run of backticks in `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _cell(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def to_markdown(blocks: list[Block]) -> str:
    """Render blocks as Markdown; figures link to the PNG files written beside the .md file."""
    return "\n\n".join(_markdown(blocks)) + "\n"


def _markdown(blocks) -> list[str]:
    out = []
    for b in blocks:
        if isinstance(b, Details):  # Markdown has no collapsed section everywhere: a normal titled one
            out.append("#" * b.level + " " + md_escape(b.title))
            out.extend(_markdown(b.blocks))
        elif isinstance(b, Heading):
            out.append("#" * b.level + " " + md_escape(b.text))
        elif isinstance(b, Para):
            out.append(f"**{md_escape(b.text)}**" if b.lead else md_escape(b.text))
        elif isinstance(b, Table):
            cols = [md_escape(c) for c in b.df.columns]
            lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for row in b.df.itertuples(index=False):
                lines.append("| " + " | ".join(md_escape(_cell(v)) for v in row) + " |")
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{md_escape(b.caption)}]({b.name})\n\n*{md_escape(b.caption)}*")
        elif isinstance(b, Code):
            out.append(md_fence(b.text))
    return out


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left}th{background:#f4f4f4}img{max-width:100%}figure{margin:1rem 0}figcaption{font-size:.85rem;color:#555}
pre{background:#f7f7f5;border:1px solid #e2e2dd;padding:.75rem;white-space:pre-wrap;word-break:break-word;
font-size:.85rem}details{margin:1.5rem 0}summary{cursor:pointer;font-weight:600;font-size:1.1rem}
p.answer{font-size:1.15rem;background:#eef5ff;padding:.75rem 1rem;border-left:4px solid #3a78d8}"""


def to_html(blocks: list[Block], figures: dict[str, bytes], title: str) -> str:
    """Render blocks as one self-contained HTML page (figures inlined as base64 PNG); no script."""
    e = html.escape
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(_html(blocks, figures))
            + "\n</body></html>\n")


def _html(blocks, figures: dict[str, bytes]) -> list[str]:
    e = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Details):
            inner = "\n".join(_html(b.blocks, figures))
            body.append(f"<details{' open' if b.open else ''}><summary>{e(b.title)}</summary>\n{inner}\n</details>")
        elif isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="answer"' if b.lead else ""
            body.append(f"<p{cls}>{e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(str(c))}</th>" for c in b.df.columns)
            rows = "".join("<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>"
                           for row in b.df.itertuples(index=False))
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure) and b.name in figures:
            data = base64.b64encode(figures[b.name]).decode("ascii")
            body.append(f'<figure><img alt="{e(b.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(b.caption)}</figcaption></figure>")
        elif isinstance(b, Code):
            body.append(f"<pre>{e(b.text)}</pre>")
    return body
