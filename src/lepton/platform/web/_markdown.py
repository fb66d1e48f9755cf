"""A tiny, safe Markdown subset for model cards: headings, lists, tables, code, emphasis.

Every piece of text is HTML-escaped before any markup is added, and the markup added is a
fixed set of tags without attributes, so a model card (whose description a user wrote)
cannot inject HTML or script into the dashboard. Anything outside the subset shows as
plain text.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

__all__ = ["render_markdown"]

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])_(.+?)_(?!\w)")
_HEADING = re.compile(r"(#{1,6})\s+(.*)")
_TABLE_RULE = re.compile(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?")


def _inline(text: str) -> str:
    """Escape ``text``, then mark up `code`, **bold** and _italic_ (not inside code)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick stays a backtick
        parts[-2:] = ["`".join(parts[-2:])]
    out = []
    for i, part in enumerate(parts):
        escaped = html.escape(part)
        if i % 2:
            out.append(f"<code>{escaped}</code>")
        else:
            out.append(_ITALIC.sub(r"<em>\1</em>", _BOLD.sub(r"<strong>\1</strong>", escaped)))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render_markdown(text: str) -> Markup:
    """HTML for ``text`` in the subset model cards use; everything else is plain text."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            stop = len(lines) if end is None else end
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1 : stop]))}</code></pre>")
            i = stop + 1
        elif heading := _HEADING.fullmatch(line):
            level = min(len(heading.group(1)) + 1, 6)  # the page has the <h1>
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif line.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].startswith(("- ", "* ")):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        elif line.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.fullmatch(lines[i + 1]):
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(line))
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append("".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])))
                i += 1
            body = "".join(f"<tr>{r}</tr>" for r in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif line.strip():
            para = [_inline(line)]
            i += 1
            while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
                para.append(_inline(lines[i]))
                i += 1
            out.append(f"<p>{' '.join(para)}</p>")
        else:
            i += 1
    return Markup("\n".join(out))  # built from escaped text and fixed tags


def _starts_block(line: str) -> bool:
    return line.startswith(("```", "- ", "* ", "|")) or _HEADING.fullmatch(line) is not None
