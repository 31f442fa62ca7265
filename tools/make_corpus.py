"""Build edgekit's bundled distillation corpus from WordNet 3.0 (Debian's ``wordnet-base``).

Distilling a pruned encoder needs varied English, not a narrow corpus: WordNet's example sentences are everyday
usage, and its glosses, turned into sentences ("To spoon is to scoop up or take up with a spoon."), cover the
vocabulary of every domain. The split into train and evaluation is a hash of the sentence, so it never changes
when the corpus is rebuilt or filtered differently, and no sentence is in both.

    dpkg-deb -x wordnet-base_*.deb /tmp/wn
    python tools/make_corpus.py /tmp/wn/usr/share/wordnet --out edgekit/data/corpus

Writes ``wordnet-train.txt.gz``, ``wordnet-eval.txt.gz`` (one sentence a line, sorted by hash so gzip output is
byte-stable) and ``LICENSE-WordNet`` (the licence, which must travel with every copy).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

POS_FILES = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}
EVAL_EVERY = 20  # 1 in 20 sentences (by hash) is evaluation text
MIN_WORDS, MAX_WORDS = 4, 40
MAX_GLOSS_SENTENCES = 60_000  # glosses outnumber examples 3:1; keep a hash-chosen share so examples matter
_QUOTED = re.compile(r'"([^"]*)"')
_LEADING_PAREN = re.compile(r"^\s*\([^)]*\)\s*")
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")
_ARTICLE = re.compile(r"^(a|an|the|any|one|some|someone|something|anything|that|those|a?n?other)\b", re.IGNORECASE)


def sentence_hash(sentence: str) -> int:
    """The stable number a sentence's split and order come from (sha256 of its normalized text)."""
    return int.from_bytes(hashlib.sha256(normalized(sentence).encode()).digest()[:8], "big")


def normalized(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def is_eval(sentence: str) -> bool:
    return sentence_hash(sentence) % EVAL_EVERY == 0


def synsets(path: Path) -> Iterator[tuple[str, str]]:
    """(first lemma, gloss) per synset line; the licence header lines start with two spaces."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        fields, gloss = line.split("|", 1)
        words = fields.split()
        lemma = _ADJ_MARKER.sub("", words[4]).replace("_", " ")
        yield lemma, gloss.strip()


def split_gloss(gloss: str) -> tuple[list[str], list[str]]:
    """A gloss's definitions (before the quotes, split at ';') and its quoted example sentences."""
    examples = [e.strip() for e in _QUOTED.findall(gloss)]
    rest = _QUOTED.sub("", gloss)
    definitions = [d.strip() for d in rest.split(";") if d.strip()]
    return definitions, examples


def as_sentence(text: str) -> str | None:
    """Tidy spacing and quotes, capitalize, end with a full stop; None when too short or too long to use."""
    text = " ".join(text.replace("`", "'").replace("''", '"').split()).strip(" ;,:-")
    if not text or not MIN_WORDS <= len(text.split()) <= MAX_WORDS or "..." in text:
        return None
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def gloss_sentence(lemma: str, pos: str, definition: str) -> str | None:
    """A definition as a sentence about its word; the template varies with the hash so phrasing is mixed."""
    definition = _LEADING_PAREN.sub("", definition).strip()
    if len(definition.split()) < 2:
        return None
    pick = sentence_hash(lemma + definition) % 3
    if pos == "noun":
        if lemma[:1].isupper():
            text = f"{lemma} is {definition}"
        elif _ARTICLE.match(definition):
            text = f"{_article(lemma)} {lemma} is {definition}"
        else:
            text = (f"{_article(lemma)} {lemma} is {_article(definition)} {definition}",
                    f"The word {lemma} refers to {definition}", f"By {lemma} we mean {definition}")[pick]  # fmt: skip
    elif pos == "verb":
        pick = pick % 2 if definition.split()[0] in ("be", "cause", "make", "have") else pick  # "you be ..."
        text = (f"To {lemma} is to {definition}", f"To {lemma} means to {definition}",
                f"If you {lemma}, you {definition}")[pick]  # fmt: skip
    else:
        text = (f"{lemma} means {definition}", f"Something described as {lemma} is {definition}",
                f"The word {lemma} means {definition}")[pick if pos == "adj" else pick % 2 * 2]  # fmt: skip
    return as_sentence(text)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def corpus_sentences(wordnet: Path) -> tuple[list[str], list[str]]:
    """Example sentences and gloss sentences of every part of speech, each deduplicated (case-insensitively)."""
    examples: dict[str, str] = {}
    glosses: dict[str, str] = {}
    for pos, name in POS_FILES.items():
        for lemma, gloss in synsets(wordnet / name):
            definitions, quoted = split_gloss(gloss)
            _add(examples, (as_sentence(q) for q in quoted))
            _add(glosses, (gloss_sentence(lemma, pos, d) for d in definitions[:1]))
    gloss_only = {k: v for k, v in glosses.items() if k not in examples}
    kept = sorted(gloss_only.values(), key=sentence_hash)[:MAX_GLOSS_SENTENCES]
    return list(examples.values()), kept


def _add(seen: dict[str, str], sentences: Iterable[str | None]) -> None:
    for s in sentences:
        if s is not None:
            seen.setdefault(normalized(s), s)


def write_split(sentences: Iterable[str], out: Path) -> tuple[int, int]:
    """Train and eval files, each sorted by hash; gzip's mtime is 0 so a rebuild is byte-identical."""
    ordered = sorted(set(sentences), key=lambda s: (sentence_hash(s), s))
    train = [s for s in ordered if not is_eval(s)]
    evaluation = [s for s in ordered if is_eval(s)]
    out.mkdir(parents=True, exist_ok=True)
    for name, lines in (("wordnet-train.txt.gz", train), ("wordnet-eval.txt.gz", evaluation)):
        with open(out / name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(("\n".join(lines) + "\n").encode("utf-8"))
    return len(train), len(evaluation)


def licence_text(wordnet: Path) -> str:
    """The WordNet 3.0 licence from the data files' own header (identical in each)."""
    lines = (wordnet / "data.adj").read_text(encoding="utf-8").splitlines()
    header = [re.sub(r"^\s+\d+\s?", "", ln).rstrip() for ln in lines if ln.startswith("  ")]
    return "\n".join(header).strip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wordnet", type=Path, help="directory with data.noun, data.verb, data.adj, data.adv")
    parser.add_argument("--out", type=Path, default=Path("edgekit/data/corpus"))
    args = parser.parse_args()
    examples, glosses = corpus_sentences(args.wordnet)
    train, evaluation = write_split([*examples, *glosses], args.out)
    notice = "Sentences derived from WordNet 3.0 (Princeton University), under the WordNet 3.0 licence:\n\n"
    (args.out / "LICENSE-WordNet").write_text(notice + licence_text(args.wordnet), encoding="utf-8")
    print(f"{len(examples)} example + {len(glosses)} gloss sentences -> {train} train, {evaluation} eval in {args.out}")


if __name__ == "__main__":
    main()
