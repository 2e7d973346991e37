"""Writing one benchmark's section of docs/benchmarks.md without touching the others."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


@dataclass
class Row:
    """One line of the results table."""

    id: str
    what: str
    result: str
    goal: str = ""
    notes: str = ""


def write_section(doc: Path, heading: str, section: str) -> None:
    """Replace (or append) the section that starts with ``heading`` in ``doc``, atomically.

    Parameters
    ----------
    doc : Path
        The markdown file (created with a ``# Benchmarks`` title if missing).
    heading : str
        The section's ``## ...`` heading line.
    section : str
        The new section text, heading included.
    """
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)
