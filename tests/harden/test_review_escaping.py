"""Item 11 of issue 15: values from people or files never render as HTML or Markdown in the review app.

Before: ``_kv`` put reviewer and annotator names into ``unsafe_allow_html`` markdown (bold text, remote ``<img>``
and links rendered), and captions/flash messages put names and reasons into Markdown.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dashboards.safe import html_text, md_text
from pipeline.core import io
from qa.decision_store import DecisionStore
from tests.dashboard.synth import make_project

EVIL_HTML = '<b>bold</b><img src="http://127.0.0.1:9/pixel.png"><a href="http://127.0.0.1:9/">link</a>'
EVIL_MD = "**bold** ![img](http://127.0.0.1:9/pixel.png) [link](http://127.0.0.1:9/) :red[red] $x^2$"
ALLOWED_TAGS = {"div", "b", "br", "span", "kbd", "style"}  # the app's own markup


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _tags(markup: str) -> set[str]:
    parser = _Tags()
    parser.feed(markup)
    return set(parser.tags)


@pytest.fixture
def hostile(tmp_path: Path) -> Any:
    project = make_project(tmp_path / "proj", n=6, flag_every=1)
    root = project.root
    corr = pd.read_parquet(root / "data/corrections/corrections.parquet")
    corr["annotator"] = [EVIL_HTML if i % 2 == 0 else EVIL_MD for i in range(len(corr))]
    io.write_parquet(root / "data/corrections/corrections.parquet", corr)
    pre = pd.read_parquet(root / "data/preannotate/preannotations.parquet")
    pre["model_version"] = EVIL_MD
    io.write_parquet(root / "data/preannotate/preannotations.parquet", pre)
    return project


def _html_elements(at: Any) -> list[str]:
    return [m.value for m in at.markdown if m.proto.allow_html]


def _check(at: Any) -> None:
    for markup in _html_elements(at):
        assert _tags(markup) <= ALLOWED_TAGS, markup
    for m in [*at.markdown, *at.caption, *at.info, *at.success, *at.error, *at.warning]:
        if m.proto.allow_html if hasattr(m.proto, "allow_html") else False:
            continue
        text = m.value
        # no live Markdown link/image/bold/directive/maths built from the hostile values
        assert not re.search(r"(?<!\\)!\[img(?<!\\)\]", text), text
        assert not re.search(r"(?<!\\)\[link(?<!\\)\]\(", text), text
        assert "**bold**" not in text and ":red[" not in text and "$x^2$" not in text, text


def test_queue_and_item_pages_escape_names(hostile: Any, app: Any) -> None:
    at = app(hostile, reviewer=EVIL_HTML)
    _check(at)
    captions = " ".join(c.value for c in at.caption)
    assert md_text(EVIL_MD) in captions and md_text(EVIL_HTML) in captions  # shown, literally
    item = hostile.flagged[0]
    at.session_state["item_id"] = item
    at.session_state["view"] = "Item"
    at.run()
    assert not at.exception, at.exception
    _check(at)
    kv = [v for v in _html_elements(at) if v.startswith("<div class='ml-kv'>")]
    assert kv and (html_text(EVIL_HTML) in kv[0] or html_text(EVIL_MD) in kv[0]), kv
    # a decision by a reviewer with a hostile name: the status line shows the name as text
    DecisionStore(hostile.root / "data/review/db/decisions.sqlite").record(
        item, "reject", reviewer=EVIL_HTML, reason=EVIL_MD, mask_digest="")
    at.run()
    _check(at)
    kv = [v for v in _html_elements(at) if v.startswith("<div class='ml-kv'>")]
    assert f"by {html_text(EVIL_HTML)}" in kv[0], kv[0]


def test_reject_reason_in_the_flash_message(hostile: Any, app: Any) -> None:
    at = app(hostile, reviewer="rita")
    at.session_state["item_id"] = hostile.flagged[0]
    at.session_state["view"] = "Item"
    at.run()
    at.text_input(key="reject_reason").input(EVIL_MD).run()
    at.button(key="reject").click().run()
    assert not at.exception, at.exception
    assert any(md_text(EVIL_MD) in s.value for s in at.success), [s.value for s in at.success]
    _check(at)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"), ('"a" & \'b\'', "&quot;a&quot; &amp; &#x27;b&#x27;")],
)
def test_html_text(raw: str, escaped: str) -> None:
    assert html_text(raw) == escaped


def test_md_text_escapes_every_markdown_trigger() -> None:
    out = md_text("# h\n- [a](u) ![i](u) **b** _i_ `c` :red[x] :material/home: $m$ <b> ~s~ |t|")
    assert "\n" not in out
    # every ASCII punctuation character is preceded by a backslash
    for i, ch in enumerate(out):
        if ch in "#-[]()!*_`:$<>~|/":
            assert out[i - 1] == "\\", (i, out)
    assert md_text("plain name 42") == "plain name 42"
