"""Risk-based decoders: each decoder's path is the argmin of its risk over every path (brute
force on tiny cases), with the expected number of errors it reports."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from probgen.core.errors import DataError
from probgen.hmm.model import HMM

SEQUENCES = [
    torch.tensor([2, 2, 0, 2, 0]),
    torch.tensor([0, 0, 1, 2, 1, 1]),
    torch.tensor([2, 1, 0]),
]


def _model() -> HMM:
    model = HMM(3, "categorical", n_symbols=3).double()
    # A zero transition (0 -> 2) makes posterior decoding's path impossible on some inputs.
    return model.set_parameters(
        start_probs=[0.5, 0.3, 0.2],
        transition_probs=[[0.7, 0.3, 0.0], [0.1, 0.6, 0.3], [0.3, 0.2, 0.5]],
        emission_probs=[[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]],
    )


def _all_risks(model: HMM, x: torch.Tensor):
    """Every path with its five risks, by enumeration."""
    start, transition = model.start_probs, model.transition_probs
    emission = model.emission_probs[:, x].T  # (T, S)
    length, n_states = len(x), model.n_states
    paths = list(itertools.product(range(n_states), repeat=length))
    prior = torch.tensor(
        [float(start[p[0]] * math.prod(transition[a, b] for a, b in zip(p, p[1:]))) for p in paths],
        dtype=torch.float64,
    )
    joint = prior * torch.tensor(
        [math.prod(float(emission[t, s]) for t, s in enumerate(p)) for p in paths],
        dtype=torch.float64,
    )
    posterior_paths = joint / joint.sum()
    gamma = torch.zeros(length, n_states, dtype=torch.float64)
    prior_marginal = torch.zeros(length, n_states, dtype=torch.float64)
    for weight, prior_weight, path in zip(posterior_paths, prior, paths):
        for t, state in enumerate(path):
            gamma[t, state] += weight
            prior_marginal[t, state] += prior_weight
    rows = []
    for index, path in enumerate(paths):
        picked = torch.stack([gamma[t, s] for t, s in enumerate(path)])
        prior_picked = torch.stack([prior_marginal[t, s] for t, s in enumerate(path)])
        rows.append(
            {
                "errors": float((1 - picked).sum()),
                "log_marginal": float(-picked.log().sum()),
                "path": float(-posterior_paths[index].log()),
                "prior_marginal": float(-prior_picked.log().sum()),
                "prior_path": float(-prior[index].log()),
                "admissible": bool(joint[index] > 0),
            }
        )
    return paths, rows


def _risk(row: dict, weights: dict) -> float:
    total = 0.0
    for name, weight in weights.items():
        if weight:
            total += weight * row[name]  # inf stays inf
    return total


CASES = [
    ("viterbi", {}, {"path": 1.0}, False),
    ("posterior", {}, {"errors": 1.0}, False),
    ("posterior_viterbi", {}, {"errors": 1.0}, True),
    ("hybrid", {"hybrid_weight": 0.0}, {"log_marginal": 1.0}, False),
    ("hybrid", {"hybrid_weight": 0.7}, {"log_marginal": 1.0, "path": 0.7}, False),
    ("hybrid", {"hybrid_weight": 5.0}, {"log_marginal": 1.0, "path": 5.0}, False),
    (
        "risk",
        {"risk": {"errors": 2.0, "path": 0.5, "prior_marginal": 0.3, "prior_path": 0.2}},
        {"errors": 2.0, "path": 0.5, "prior_marginal": 0.3, "prior_path": 0.2},
        False,
    ),
    (
        "risk",
        {"risk": {"errors": 1.0, "log_marginal": 0.5}},
        {"errors": 1.0, "log_marginal": 0.5},
        True,
    ),
]


@pytest.mark.parametrize(("method", "options", "weights", "admissible"), CASES)
def test_each_decoder_minimises_its_risk(method, options, weights, admissible):
    model = _model()
    extra = {"admissible": True} if admissible and method == "risk" else {}
    result = model.decode(SEQUENCES, method, **options, **extra)
    for index, x in enumerate(SEQUENCES):
        paths, rows = _all_risks(model, x)
        risks = [
            _risk(row, weights) if row["admissible"] or not admissible else math.inf for row in rows
        ]
        best = min(risks)
        decoded = tuple(result.paths[index, : len(x)].tolist())
        assert (result.paths[index, len(x) :] == -1).all()
        row = rows[paths.index(decoded)]
        assert _risk(row, weights) == pytest.approx(best, rel=1e-9, abs=1e-9)
        assert float(result.risks[index]) == pytest.approx(_risk(row, weights), rel=1e-9)
        assert float(result.expected_errors[index]) == pytest.approx(row["errors"], abs=1e-12)
        if admissible:
            assert row["admissible"]


def test_decoders_relate_as_the_paper_says():
    model = _model()
    viterbi_paths, viterbi_scores = model.viterbi(SEQUENCES)
    viterbi = model.decode(SEQUENCES, "viterbi")
    assert torch.equal(viterbi.paths, viterbi_paths)
    torch.testing.assert_close(viterbi.log_probs, viterbi_scores)
    posterior = model.decode(SEQUENCES, "posterior")
    gamma = model.posterior(SEQUENCES)
    expected = gamma.argmax(-1).masked_fill(gamma.sum(-1) == 0, -1)
    assert torch.equal(posterior.paths, expected)
    assert torch.equal(model.decode(SEQUENCES, "hybrid", hybrid_weight=0.0).paths, expected)
    assert torch.equal(model.decode(SEQUENCES, "hybrid", hybrid_weight=1e4).paths, viterbi_paths)
    # Posterior decoding has the fewest expected errors; its path here is impossible, which
    # the admissible version and every hybrid with C > 0 avoid.
    admissible = model.decode(SEQUENCES, "posterior_viterbi")
    assert (posterior.expected_errors <= admissible.expected_errors + 1e-12).all()
    assert (admissible.expected_errors <= viterbi.expected_errors + 1e-12).all()
    assert math.isinf(float(posterior.log_probs.min()))
    assert torch.isfinite(admissible.log_probs).all()
    assert torch.isfinite(model.decode(SEQUENCES, "hybrid", hybrid_weight=0.01).log_probs).all()


def test_bad_decoding_options():
    model = _model()
    with pytest.raises(DataError, match="method"):
        model.decode(SEQUENCES, "map")
    with pytest.raises(DataError, match="hybrid_weight"):
        model.decode(SEQUENCES, "hybrid", hybrid_weight=-1.0)
    with pytest.raises(DataError, match="risk"):
        model.decode(SEQUENCES, "risk")
    with pytest.raises(DataError, match="unknown terms"):
        model.decode(SEQUENCES, "risk", risk={"error": 1.0})
    with pytest.raises(DataError, match="sequences"):
        model.decode([torch.tensor([0, 5])])
