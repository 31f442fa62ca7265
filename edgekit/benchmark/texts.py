"""Held-back evaluation text for text models that ``edgekit bench`` runs: generated, never anyone's calibration.

Retrieval metrics need a set of texts (recall@10 among at least
:data:`edgekit.retrieval.RETRIEVAL_MIN_TEXTS`), and the bench has only the artifact: it cannot know which text
calibrated or distilled it, so it must not borrow a file that might have (``benchmarks/data/sentences.txt``
often did). These sentences come from a small general grammar (everyday topics, statements and questions, one
to three clauses, so lengths vary), seeded, so every run and every target sees the same set. They are not
chosen to please any model: the generator knows nothing about one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgekit.benchmark.plan import ModelPlan

BENCH_TEXTS = 256  # at least RETRIEVAL_MIN_TEXTS, small enough for one batch per target

_SUBJECTS = (
    "the teacher", "my neighbour", "a young doctor", "the city council", "our team", "the old farmer",
    "a travelling musician", "the new manager", "my grandmother", "the engineers", "a local baker", "the pilot",
    "the students", "a quiet librarian", "the committee", "an experienced nurse", "the river guide", "my cousin",
)  # fmt: skip
_VERBS = (
    "repaired", "painted", "sold", "described", "cancelled", "discovered", "cooked", "photographed", "measured",
    "ordered", "returned", "planned", "recommended", "borrowed", "cleaned", "delivered", "studied", "forgot",
)  # fmt: skip
_OBJECTS = (
    "the broken bicycle", "a map of the coast", "fresh bread", "the annual budget", "a wooden table",
    "the train tickets", "an old piano", "the garden fence", "a report on rainfall", "the winter coats",
    "a recipe for soup", "the hospital schedule", "a box of letters", "the football match", "a set of maps",
    "the solar panels", "a bag of apples", "the concert programme", "a small boat", "the vaccine records",
)  # fmt: skip
_PLACES = (
    "near the station", "in the mountains", "at the market", "behind the school", "on the island",
    "in a small village", "at the harbour", "in the library", "across the bridge", "at the hospital",
    "in the desert", "by the lake", "in the capital", "at the airport", "in the kitchen", "on the farm",
)  # fmt: skip
_TIMES = (
    "yesterday", "last winter", "every morning", "after the storm", "before the holidays", "on Sunday",
    "during the festival", "at midnight", "next spring", "twice a week", "in the evening", "after lunch",
)  # fmt: skip
_LINKS = ("because", "although", "while", "so", "and then", "but", "after", "until")
_QUESTIONS = ("why", "when", "where", "how often", "whether")


def _clause(rng: np.random.Generator) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.6:
        parts.append(rng.choice(_PLACES))
    if rng.random() < 0.5:
        parts.append(rng.choice(_TIMES))
    return " ".join(str(p) for p in parts)


def _sentence(rng: np.random.Generator) -> str:
    clauses = [_clause(rng) for _ in range(int(rng.choice([1, 1, 2, 2, 3])))]
    text = clauses[0]
    for clause in clauses[1:]:
        text += f" {rng.choice(_LINKS)} {clause}"
    if rng.random() < 0.2:
        return f"Nobody knows {rng.choice(_QUESTIONS)} {text}."
    return text[0].upper() + text[1:] + "."


def heldout_texts(n: int = BENCH_TEXTS, seed: int = 0) -> list[str]:
    """``n`` distinct generated sentences, the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out.setdefault(_sentence(rng), None)
    return list(out)


def text_fidelity_feeds(plan: ModelPlan) -> dict[str, np.ndarray] | None:
    """Feeds of :func:`heldout_texts` for an artifact that embeds text (a tokenizer and an ``embedding`` output,
    a free batch dim), tokenized as the artifact's own tokenizer does; None for any other model (random inputs
    then), or where the tokenizer cannot be used here (no ``tokenizers``)."""
    from edgekit.artifact import TOKENIZER_FILE
    from edgekit.errors import EdgekitError
    from edgekit.fidelity import output_kinds
    from edgekit.text import TextEncoder

    manifest = plan.ref.manifest
    if manifest is None or TOKENIZER_FILE not in manifest.files:
        return None
    if "embedding" not in output_kinds(plan.ref.outputs, declared=manifest.output_kinds).values():
        return None
    if not all(s.rank >= 1 and isinstance(s.shape[0], str) for s in plan.ref.inputs):
        return None
    fixed = [s.shape[1] for s in plan.ref.inputs if s.rank >= 2 and isinstance(s.shape[1], int)]
    try:
        encoder = TextEncoder.for_artifact(plan.path if plan.path.is_dir() else plan.path.parent)
        return encoder.encode(heldout_texts(), pad_to=fixed[0] if fixed else None)
    except EdgekitError:
        return None
