"""Retrieval-grade fidelity: recall@k of the reference's neighbours and Spearman of pairwise similarities, on
hand-computable sets; the expressions that name them; and where they may not apply."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.fidelity import compare_outputs, fidelity_metrics, parse_fidelity, tolerance_for
from edgekit.retrieval import (
    TEXTS_KEY,
    average_ranks,
    neighbours,
    recall_at_k,
    retrieval_metrics,
    similarities,
    similarity_spearman,
    spearman_of,
)


def _angles(theta: np.ndarray) -> np.ndarray:
    """Unit vectors on a circle: cosine similarity is cos(Δθ), so neighbours are the nearest angles."""
    return np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _random_set(n: int = 60, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


# --- recall@k -------------------------------------------------------------------------------------------------


def test_identical_embeddings_agree_fully() -> None:
    x = _random_set()
    assert recall_at_k(x, x, 10) == 1.0
    assert similarity_spearman(x, x) == pytest.approx(1.0)
    # each model in its own space: a rotation and a rescale of every vector change no neighbour, no ranking
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))
    scaled = (x @ q) * np.random.default_rng(2).uniform(0.5, 3.0, size=(60, 1))
    assert recall_at_k(x, scaled, 10) == 1.0
    assert similarity_spearman(x, scaled) == pytest.approx(1.0)


def test_neighbours_exclude_the_text_itself() -> None:
    x = _angles(np.array([0.0, 0.1, 0.3, 0.7, 1.0]))
    nb = neighbours(similarities(x), 2)  # nearest first
    assert nb.tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    assert (nb != np.arange(5)[:, None]).all()


def test_recall_of_a_known_permutation_of_neighbours() -> None:
    theta = np.arange(6) * 0.1  # six texts on an arc, 0.1 rad apart
    ref = _angles(theta)
    got = _angles(theta[[0, 1, 5, 3, 4, 2]])  # the model swaps where texts 2 and 5 sit (0.5 and 0.2 rad)
    # k=2 by hand, reference N:  0:{1,2} 1:{0,2} 2:{1,3} 3:{2,4} 4:{3,5} 5:{4,3}
    #                 model N:   0:{1,5} 1:{0,5} 2:{4,3} 3:{5,4} 4:{3,2} 5:{1,3}
    # shared:                    1       1       1       1       1       1      -> 6 of 12
    assert recall_at_k(ref, got, 2) == pytest.approx(6 / 12)
    assert recall_at_k(ref, got, 5) == 1.0  # k = n - 1: every other text is a neighbour on both sides


def test_recall_is_symmetric_in_hits_but_judges_the_reference_neighbours() -> None:
    ref, got = _random_set(seed=3), _random_set(seed=4)  # unrelated spaces: recall near chance (k / (n-1))
    chance = 10 / 59
    assert abs(recall_at_k(ref, got, 10) - chance) < 0.1
    assert recall_at_k(ref, got, 10) == pytest.approx(recall_at_k(got, ref, 10))  # |A ∩ B| / k both ways


@pytest.mark.parametrize(("n", "k"), [(10, 10), (5, 10), (3, 3)])
def test_recall_needs_more_texts_than_k(n: int, k: int) -> None:
    x = _random_set(n=n)
    with pytest.raises(InputError, match=rf"recall@{k} needs at least {k + 1} held-back texts.*got {n}"):
        recall_at_k(x, x, k)


def test_recall_rejects_mismatched_sets_and_bad_k() -> None:
    with pytest.raises(InputError, match="same texts"):
        recall_at_k(_random_set(n=20), _random_set(n=21), 5)
    with pytest.raises(InputError, match="k >= 1"):
        recall_at_k(_random_set(n=20), _random_set(n=20), 0)


# --- spearman -------------------------------------------------------------------------------------------------


def test_average_ranks_share_ties() -> None:
    assert average_ranks(np.array([10.0, 20.0, 10.0, 30.0, 20.0, 10.0])).tolist() == [2.0, 4.5, 2.0, 6.0, 4.5, 2.0]
    assert average_ranks(np.array([3.0, 1.0, 2.0])).tolist() == [3.0, 1.0, 2.0]


def test_spearman_by_hand_with_ties() -> None:
    # ranks a: 1 2 3 4; b: 1.5 1.5 3 4 -> Pearson of the ranks = 0.9486832980505138 (by hand: 4.5 / sqrt(5 * 4.5))
    assert spearman_of(np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 5.0, 6.0, 7.0])) == pytest.approx(
        4.5 / np.sqrt(5 * 4.5)
    )
    assert spearman_of(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert spearman_of(np.ones(4), np.ones(4)) == 1.0 and spearman_of(np.ones(4), np.arange(4.0)) == 0.0


def test_a_monotone_transform_of_similarities_keeps_spearman_at_one() -> None:
    sims = np.random.default_rng(7).uniform(-1, 1, size=50)
    assert spearman_of(sims, sims**3) == pytest.approx(1.0)
    assert spearman_of(sims, np.exp(4 * sims)) == pytest.approx(1.0)
    # in embedding space: stretching every angle by 1.8 (all below pi) keeps the order of every pairwise cosine
    # (random angles, so no two gaps are equal: equal gaps would be ties that float noise orders either way)
    theta = np.sort(np.random.default_rng(8).uniform(0.0, 1.7, size=25))
    ref, stretched = _angles(theta), _angles(theta * 1.8)
    assert similarity_spearman(ref, stretched) == pytest.approx(1.0)
    assert recall_at_k(ref, stretched, 3) == 1.0
    assert similarity_spearman(ref, _angles(theta**2)) < 1.0  # a non-uniform warp reorders some pairs


def test_spearman_counts_pairs_i_below_j_only() -> None:
    x = _random_set(n=30)
    sim = similarities(x)
    upper = sim[np.triu_indices(30, k=1)]
    noisy = x + 0.3 * np.random.default_rng(5).normal(size=x.shape)
    assert similarity_spearman(x, noisy) == pytest.approx(
        spearman_of(upper, similarities(noisy)[np.triu_indices(30, 1)])
    )
    with pytest.raises(InputError, match="spearman needs at least 3"):
        similarity_spearman(x[:2], x[:2])


def test_retrieval_metrics_say_how_many_texts_and_skip_what_is_undefined() -> None:
    x = _random_set(n=12)
    m = retrieval_metrics(x, x, (5, 10, 20))
    assert m[TEXTS_KEY] == 12 and m["recall@5"] == m["recall@10"] == 1.0 and "recall@20" not in m
    assert m["spearman"] == pytest.approx(1.0)
    assert retrieval_metrics(x[:4], x[:4]) == {}  # a gate's few random rows are no set of texts


# --- through the fidelity core ---------------------------------------------------------------------------------


def test_fidelity_metrics_stack_samples_into_one_set_for_embeddings_only() -> None:
    x = _random_set(n=40)
    noisy = x + 0.05 * np.random.default_rng(6).normal(size=x.shape)
    refs = [{"emb": x[i : i + 1], "logits": x[i : i + 1, :3]} for i in range(40)]
    outs = [{"emb": noisy[i : i + 1], "logits": noisy[i : i + 1, :3]} for i in range(40)]
    m = fidelity_metrics(refs, outs, {"emb": "embedding", "logits": "classifier"}, recall_ks=(5, 10))
    assert m[TEXTS_KEY] == 40 and m["recall@10"] == recall_at_k(x, noisy, 10) and "recall@5" in m
    assert m["spearman"] == pytest.approx(similarity_spearman(x, noisy))
    assert "spearman" not in fidelity_metrics(refs, outs, {"emb": "tensor"})  # not an embedding: no set metrics


def test_compare_outputs_reports_retrieval_for_a_batch_of_embeddings() -> None:
    x = _random_set(n=30)
    out = compare_outputs({"emb": x}, {"emb": x}, tolerance_for("fp32"), {"emb": "embedding"})["emb"]
    assert out["passed"] and out["recall@10"] == 1.0 and out[TEXTS_KEY] == 30


# --- expressions ------------------------------------------------------------------------------------------------


def test_comma_separated_goals_must_all_hold() -> None:
    goal = parse_fidelity("cosine>=0.99, recall@10>=0.95,spearman>=0.98")
    assert str(goal) == "cosine>=0.99,recall@10>=0.95,spearman>=0.98"
    assert [t.metric for t in goal.targets] == ["cosine", "recall@10", "spearman"]
    assert goal.met({"cosine": 0.995, "recall@10": 0.96, "spearman": 0.99})
    assert not goal.met({"cosine": 0.995, "recall@10": 0.90, "spearman": 0.99})
    assert not goal.met({"cosine": 0.995, "spearman": 0.99})  # a metric not measured is not met
    assert "recall@10=0.90000" in goal.values({"cosine": 0.995, "recall@10": 0.9, "spearman": 0.99})


def test_recall_at_any_k_parses_and_is_computed() -> None:
    goal = parse_fidelity("recall@3>=0.5,recall@25>=0.5")
    assert goal.recall_ks == (3, 10, 25)


def test_goal_prefers_more_targets_met_then_the_first_metric() -> None:
    goal = parse_fidelity("recall@10>=0.95,cosine>=0.99")
    a, b = {"recall@10": 0.96, "cosine": 0.98}, {"recall@10": 0.90, "cosine": 0.985}
    assert goal.better(a, b) and not goal.better(b, a)
    c = {"recall@10": 0.93, "cosine": 0.97}
    assert goal.better(c, b)  # equally many met (none), c has the better recall


BAD = ["recall@0>=0.9", "recall@>=0.9", "recall@10<=0.9", "spearman>=1.5", "cosine>=0.99,", ",cosine>=0.99",
       "cosine>=0.99,,top1>=0.9", "recall10>=0.9"]  # fmt: skip


@pytest.mark.parametrize("expr", BAD)
def test_bad_retrieval_expressions_are_input_errors(expr: str) -> None:
    with pytest.raises(InputError, match="bad fidelity expression"):
        parse_fidelity(expr)


def test_retrieval_goals_need_an_embedding_output_and_enough_texts() -> None:
    goal = parse_fidelity("cosine>=0.99,recall@10>=0.95")
    with pytest.raises(InputError, match=r"recall@10>=0.95 needs an embedding output.*--output-kind NAME=embedding"):
        goal.check_applies({"logits": "classifier"})
    goal.check_applies({"logits": "classifier", "emb": "embedding"})
    with pytest.raises(InputError, match=r"spearman>=0\.9 needs an embedding output"):
        parse_fidelity("spearman>=0.9").check_applies({"y": "tensor"})
    parse_fidelity("cosine>=0.99").check_applies({"y": "tensor"})
    with pytest.raises(InputError, match=r"recall@10 needs at least 11 held-back texts .*got 10"):
        goal.check_texts(10)
    goal.check_texts(11)
    parse_fidelity("cosine>=0.99").check_texts(1)  # cosine needs no set
