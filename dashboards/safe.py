"""Text from people or files, made inert before the review app renders it.

Reviewer and annotator names, reasons, model versions, file names and error messages come from people or files.
Streamlit renders ``st.markdown`` / ``st.caption`` / ``st.info``... as Markdown (links, remote images, colour
directives) and, with ``unsafe_allow_html``, as HTML. Every such value goes through :func:`html_text` (HTML
contexts) or :func:`md_text` (Markdown contexts) first.
"""

from __future__ import annotations

import html
import re

# every ASCII punctuation character may be backslash-escaped in CommonMark; Streamlit adds :colour[...] and
# :material/icon: directives and $...$ maths, which the same escapes disable
_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def html_text(value: object) -> str:
    """``value`` as text that HTML shows literally (``<b>`` stays ``<b>``, quotes too)."""
    return html.escape(str(value), quote=True)


def md_text(value: object) -> str:
    """``value`` as text that Streamlit's Markdown shows literally: punctuation backslash-escaped, line breaks
    flattened (a name cannot start a heading, a list, a link, an image, a directive or a formula)."""
    flat = " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", flat)
