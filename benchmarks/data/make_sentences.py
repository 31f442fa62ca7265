"""Rebuild ``sentences.txt``: real English sentences from CPython's ``pydoc_data/topics.py``, offline.

    .venv/bin/python benchmarks/data/make_sentences.py [--max 900]

Prose paragraphs of the Python reference documentation are split into sentences; code blocks, headings,
grammar rules and fragments are dropped. The selection is deterministic for a given Python version.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.")
_ODD = re.compile(r"[*=<>{}\[\]|\\@#~^`]|::|\s{2,}|\.\.\.")


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs that are running text: not indented (code, grammar), not underlined headings."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not lines or any(ln.startswith((" ", "\t")) for ln in lines):
            continue
        if any(set(ln.strip()) <= set("*=-~^") for ln in lines):
            continue
        paragraphs.append(" ".join(ln.strip() for ln in lines))
    return paragraphs


def good_sentence(s: str) -> bool:
    words = s.split()
    if not 8 <= len(words) <= 40 or not s.endswith("."):
        return False
    if _ODD.search(s) or s.endswith(_ABBREVIATIONS) or s.count('"') % 2:
        return False
    letters = sum(c.isalpha() for c in s)
    return letters >= 0.75 * len(s.replace(" ", ""))


def sentences(max_count: int) -> list[str]:
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for paragraph in prose_paragraphs(topics[key]):
            for s in _SENTENCE_END.split(paragraph):
                s = s.strip()
                if good_sentence(s):
                    seen.setdefault(s, None)
    found = list(seen)
    step = max(1, len(found) / max_count)
    return [found[int(i * step)] for i in range(min(max_count, len(found)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max", type=int, default=900)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sentences.txt"))
    args = parser.parse_args()
    chosen = sentences(args.max)
    args.out.write_text("\n".join(chosen) + "\n")
    print(f"wrote {len(chosen)} sentences ({args.out.stat().st_size} bytes) to {args.out}")


if __name__ == "__main__":
    main()
