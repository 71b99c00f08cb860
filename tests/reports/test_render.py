from __future__ import annotations

import re

import pandas as pd

from reports._render import (Code, Details, Figure, Heading, Para, Table, md_escape, md_fence, to_html,
                            to_markdown)

HOSTILE = "<script>alert(1)</script> ``` `````` </pre> & | [x](javascript:y) *b* _i_\n# not a heading"


def test_fence_is_longer_than_any_backtick_run():
    fenced = md_fence(HOSTILE)
    fence = fenced.split("\n", 1)[0].rstrip("text")
    assert fence == "`" * 7
    body = fenced[len(fence) + len("text\n"): -len(fence) - 1]
    assert body == HOSTILE
    assert md_fence("plain").startswith("```text\n")


def test_md_escape_neutralises_markup():
    s = md_escape(HOSTILE)
    assert "\n" not in s
    for raw in ("<script>", "</pre>", "[x]", "*b*", "_i_", "`"):
        assert raw not in s.replace("\\" + raw[0], "")  # every active character is escaped
    assert md_escape("# title").startswith("\\#") and md_escape("1. item") == "1\\. item"


def test_html_escapes_every_block():
    blocks = [Heading(1, HOSTILE), Para(HOSTILE, lead=True), Table(pd.DataFrame({HOSTILE: [HOSTILE]})),
              Figure("f.png", HOSTILE), Code(HOSTILE)]
    page = to_html(blocks, {"f.png": b"\x89PNG"}, title=HOSTILE)
    assert "<script>" not in page and "</pre> &" not in page and 'href="javascript' not in page
    assert page.count("&lt;script&gt;") >= 6
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"https?:", page)


def test_markdown_escapes_every_block():
    blocks = [Heading(2, HOSTILE), Para(HOSTILE), Table(pd.DataFrame({"a|b": [HOSTILE]})),
              Figure("f.png", HOSTILE), Code(HOSTILE)]
    md = to_markdown(blocks)
    outside = md.split("```````text", 1)[0]
    assert "<script>" not in outside and "\n# not" not in outside
    assert "a\\|b" in md
    assert "```````text\n" + HOSTILE + "\n```````" in md


def _details() -> Details:
    return Details(HOSTILE, (Para("how it was computed"), Figure("fig.png", "a plot"),
                             Details("deeper", (Code(HOSTILE),), level=3)))


def test_details_is_a_plain_details_element_in_html():
    page = to_html([Para("answer first"), _details()], {"fig.png": b"\x89PNG"}, "t")
    body = page.split("<body>", 1)[1]
    assert body.count("<details>") == 2 and body.count("</details>") == 2
    assert "<summary>&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<summary>deeper</summary>" in body
    assert body.index("answer first") < body.index("<details>") < body.index("how it was computed")
    assert body.index("data:image/png;base64,") < body.index("</details>")
    assert "<script" not in page.lower()
    assert "<details open>" in to_html([Details("shown", (Para("x"),), open=True)], {}, "t")


def test_details_is_a_titled_section_in_markdown():
    md = to_markdown([Para("answer first"), _details()])
    lines = md.splitlines()
    assert lines[2] == "## " + md_escape(HOSTILE)
    assert "how it was computed" in md and "![a plot](fig.png)" in md and "### deeper" in md
    assert md_fence(HOSTILE) in md and "<details" not in md
