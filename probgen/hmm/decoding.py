"""Decoding beyond Viterbi: posterior (maximum expected accuracy) and risk-based decoders.

Lember & Koloydenko (2014, "Bridging Viterbi and posterior decoding: a generalized risk
approach to hidden path inference based on hidden Markov models", JMLR 15) write every
decoder as the path s minimising a risk given the observations x. With the posterior
marginals p_t(j | x), the prior marginals P(Z_t = j) and the path probabilities, the risks
here are (each a sum over the steps of a sequence; the paper's averages divide all but the
first by T, which rescales the weights but is the same family):

- ``errors``: R1(s|x) = sum_t (1 - p_t(s_t | x)), the expected number of misclassified steps,
  minimised by posterior decoding (PD, maximum expected accuracy, "MPM");
- ``log_marginal``: Rbar1(s|x) = -sum_t log p_t(s_t | x) (pointwise MAP, "PMAP");
- ``path``: Rbar_inf(s|x) = -log p(s | x), minimised by Viterbi (MAP);
- ``prior_marginal``: Rbar1(s) = -sum_t log P(Z_t = s_t);
- ``prior_path``: Rbar_inf(s) = -log p(s).

The generalised risk  C_e R1(s|x) + C1 Rbar1(s|x) + C2 Rbar_inf(s|x) + C3 Rbar1(s) +
C4 Rbar_inf(s)  is additive over steps with first-order pair terms, so one Viterbi-type
recursion minimises it (the paper's Theorem 4 and its extension to R1): unary scores
-C_e (1 - p_t) + C1 log p_t + C2 log f_j(x_t) + C3 log P(Z_t = j) and pair scores
(C2 + C4) log A_ij. ``method="hybrid"`` is the paper's main family Rbar1(s|x) + C Rbar_inf(s|x):
C = 0 is PMAP (= posterior decoding), C -> infinity is Viterbi, and any C > 0 returns an
admissible path (positive probability). ``method="posterior_viterbi"`` maximises the expected
accuracy among admissible paths only (PD's path may use an impossible transition).

Every decoder reports, beside the paths, the expected number of errors of its paths, their
joint log-probabilities log p(x, s) and the value of the risk it minimised.

Example:
    >>> import torch
    >>> from probgen.hmm import HMM
    >>> hmm = HMM(2, "categorical", n_symbols=2).double().set_parameters(
    ...     start_probs=[0.5, 0.5], transition_probs=[[0.9, 0.1], [0.1, 0.9]],
    ...     emission_probs=[[0.8, 0.2], [0.3, 0.7]])
    >>> x = [[0, 0, 1, 0, 1, 1, 1]]
    >>> posterior, viterbi = hmm.decode(x, "posterior"), hmm.decode(x, "viterbi")
    >>> posterior.paths.tolist(), viterbi.paths.tolist()
    ([[0, 0, 1, 1, 1, 1, 1]], [[1, 1, 1, 1, 1, 1, 1]])
    >>> round(float(posterior.expected_errors[0]), 3), round(float(viterbi.expected_errors[0]), 3)
    (1.675, 2.208)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import probgen.hmm.inference as hmm_inference
from probgen.core.data import Sequences
from probgen.core.errors import DataError

METHODS = ("viterbi", "posterior", "posterior_viterbi", "hybrid", "risk")
RISK_TERMS = ("errors", "log_marginal", "path", "prior_marginal", "prior_path")


@dataclass
class Decoding:
    """Decoded paths and what they are worth.

    Attributes:
        paths: (n_sequences, max_length) long, -1 past each sequence's end.
        expected_errors: (n_sequences,) sum_t (1 - p_t(s_t | x)) of each path.
        log_probs: (n_sequences,) log p(x, s) of each path (-inf: an impossible path).
        risks: (n_sequences,) the minimised risk of each path.
    """

    paths: torch.Tensor
    expected_errors: torch.Tensor
    log_probs: torch.Tensor
    risks: torch.Tensor


def risk_weights(method: str, hybrid_weight: float = 1.0, risk: Any = None) -> dict[str, float]:
    """The generalised-risk weights of a decoding method (see the module docstring).

    Example:
        >>> risk_weights("hybrid", 2.0)
        {'errors': 0.0, 'log_marginal': 1.0, 'path': 2.0, 'prior_marginal': 0.0, 'prior_path': 0.0}
    """
    if method not in METHODS:
        raise DataError(f"method must be one of {METHODS}, got {method!r}")
    weights = dict.fromkeys(RISK_TERMS, 0.0)
    if method == "viterbi":
        weights["path"] = 1.0
    elif method in ("posterior", "posterior_viterbi"):
        weights["errors"] = 1.0
    elif method == "hybrid":
        value = float(hybrid_weight)
        if not value >= 0 or value == float("inf"):
            raise DataError(f"hybrid_weight must be a finite number >= 0, got {hybrid_weight!r}")
        weights["log_marginal"], weights["path"] = 1.0, value
    else:
        if not isinstance(risk, dict) or not risk:
            raise DataError(f"method='risk' needs risk={{term: weight}} with terms {RISK_TERMS}")
        unknown = sorted(set(risk) - set(RISK_TERMS))
        if unknown:
            raise DataError(f"risk has unknown terms {unknown}; choose from {RISK_TERMS}")
        for name, value in risk.items():
            number = float(value)
            if not number >= 0 or number == float("inf"):
                raise DataError(f"risk[{name!r}] must be a finite number >= 0, got {value!r}")
            weights[name] = number
    return weights


def _times(weight: float, logs: torch.Tensor) -> torch.Tensor:
    """weight * logs with 0 * (-inf) = 0 (a term of weight zero constrains nothing)."""
    return torch.zeros_like(logs) if weight == 0 else weight * logs


def prior_marginals(start_probs: torch.Tensor, transition_probs: torch.Tensor, length: int):
    """P(Z_t = j) for t < length, shape (length, n_states).

    Example:
        >>> prior_marginals(torch.tensor([1.0, 0.0]), torch.tensor([[0.5, 0.5], [0.0, 1.0]]),
        ...                 3).tolist()
        [[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]]
    """
    rows = [start_probs]
    for _ in range(length - 1):
        rows.append(rows[-1] @ transition_probs)
    return torch.stack(rows)


def path_risks(
    paths: torch.Tensor,
    weights: dict[str, float],
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    posteriors: torch.Tensor,
    log_likelihoods: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(risks, expected_errors, log p(x, s)) of given paths (n_sequences, max_length).

    Example:
        >>> start, transition = torch.tensor([0.5, 0.5]), torch.eye(2)
        >>> risks, errors, joint = path_risks(
        ...     torch.tensor([[0, 0]]), {"errors": 1.0}, start, transition, torch.zeros(1, 2, 2),
        ...     torch.full((1, 2, 2), 0.5), torch.zeros(1), torch.tensor([2]))
        >>> errors.tolist(), joint.tolist()
        ([1.0], [-0.6931471824645996])
    """
    n_sequences, max_length, _ = emission_log_probs.shape
    mask = hmm_inference.length_mask(lengths, n_sequences, max_length, paths.device)
    state = paths.clamp_min(0)
    picked = state.unsqueeze(-1)
    gamma = posteriors.gather(-1, picked).squeeze(-1)
    emission = emission_log_probs.gather(-1, picked).squeeze(-1)
    log_transition = transition_probs.log()[state[:, :-1], state[:, 1:]]
    log_prior = start_probs.log()[state[:, 0]] + (log_transition * mask[:, 1:]).sum(1)
    log_joint = log_prior + torch.where(mask, emission, torch.zeros_like(emission)).sum(1)
    prior = prior_marginals(start_probs, transition_probs, max_length)
    prior_picked = prior.expand(n_sequences, -1, -1).gather(-1, picked).squeeze(-1)
    zero = torch.zeros_like(gamma)
    errors = torch.where(mask, 1 - gamma, zero).sum(1)
    terms = {
        "errors": errors,
        "log_marginal": -torch.where(mask, gamma.log(), zero).sum(1),
        "path": log_likelihoods - log_joint,
        "prior_marginal": -torch.where(mask, prior_picked.log(), zero).sum(1),
        "prior_path": -log_prior,
    }
    risks = torch.zeros_like(errors)
    for name, weight in weights.items():
        if weight:
            risks = risks + weight * terms[name]
    return risks, errors, log_joint


def risk_decode(
    start_probs: torch.Tensor,
    transition_probs: torch.Tensor,
    emission_log_probs: torch.Tensor,
    posteriors: torch.Tensor,
    log_likelihoods: torch.Tensor,
    lengths: torch.Tensor,
    weights: dict[str, float],
    *,
    admissible: bool = False,
) -> Decoding:
    """The path minimising the generalised risk with `weights`, for each sequence.

    Args:
        start_probs, transition_probs: the HMM's parameters.
        emission_log_probs: (n_sequences, max_length, n_states).
        posteriors: (n_sequences, max_length, n_states) p_t(j | x).
        log_likelihoods: (n_sequences,) log p(x).
        lengths: (n_sequences,) long.
        weights: a weight per name of `RISK_TERMS`.
        admissible: restrict the minimisation to paths of positive probability.

    Example:
        >>> start, transition = torch.tensor([0.5, 0.5]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> gamma = torch.tensor([[[0.6, 0.4], [0.4, 0.6]]])
        >>> args = (start, transition, gamma.log(), gamma, torch.zeros(1), torch.tensor([2]))
        >>> risk_decode(*args, {"errors": 1.0}).paths.tolist()
        [[0, 1]]
        >>> risk_decode(*args, {"errors": 1.0}, admissible=True).paths.tolist()
        [[0, 0]]
    """
    n_sequences, max_length, _ = emission_log_probs.shape
    zero = torch.zeros_like(posteriors)
    unary = zero - weights.get("errors", 0.0) * (1 - posteriors)
    unary = unary + _times(weights.get("log_marginal", 0.0), posteriors.log())
    unary = unary + _times(weights.get("path", 0.0), emission_log_probs)
    prior = prior_marginals(start_probs, transition_probs, max_length)
    unary = unary + _times(weights.get("prior_marginal", 0.0), prior.log())
    pair_weight = weights.get("path", 0.0) + weights.get("prior_path", 0.0)
    log_start = _times(pair_weight, start_probs.log())
    log_transition = _times(pair_weight, transition_probs.log())
    if admissible:
        # -inf on impossible starts, transitions and emissions (posterior zero).
        log_start = log_start.masked_fill(start_probs <= 0, float("-inf"))
        log_transition = log_transition.masked_fill(transition_probs <= 0, float("-inf"))
        unary = unary.masked_fill(posteriors <= 0, float("-inf"))
    paths, _ = hmm_inference.viterbi(log_start, log_transition, unary, lengths)
    risks, errors, log_joint = path_risks(
        paths,
        weights,
        start_probs,
        transition_probs,
        emission_log_probs,
        posteriors,
        log_likelihoods,
        lengths,
    )
    return Decoding(paths, errors, log_joint, risks)


class HMMDecodingMixin:
    """`decode` for `probgen.hmm.model.HMM` (a mixin: it uses the HMM's parameters)."""

    def decode(
        self,
        sequences: Any,
        method: str = "posterior",
        *,
        hybrid_weight: float = 1.0,
        risk: dict[str, float] | None = None,
        admissible: bool = False,
    ) -> Decoding:
        """Hidden state paths by a risk-based decoder, with their expected number of errors.

        Args:
            sequences: the observations, as for `log_prob`.
            method: ``"posterior"`` (maximum expected accuracy: the most probable state at
                each step), ``"viterbi"`` (the most probable path), ``"posterior_viterbi"``
                (maximum expected accuracy among paths of positive probability),
                ``"hybrid"`` (Lember & Koloydenko's Rbar1(s|x) + C Rbar_inf(s|x), C =
                `hybrid_weight`: 0 is posterior decoding, large C is Viterbi) or ``"risk"``
                (the generalised risk with the weights `risk`, see `probgen.hmm.decoding`).
            hybrid_weight: C of ``method="hybrid"``.
            risk: ``{term: weight}`` of ``method="risk"``, terms from `RISK_TERMS`.
            admissible: minimise over paths of positive probability only.

        Returns:
            `Decoding` (paths, expected_errors, log_probs, risks).
        """
        self.check_fitted("decode")
        weights = risk_weights(method, hybrid_weight, risk)
        with torch.no_grad(), self._threads_for(sequences):
            data: Sequences = self._prepare(sequences)
            log_probs = self._emission_log_probs(data)
            expected = hmm_inference.expected_statistics(
                self.start_probs, self.transition_probs, log_probs, data.lengths
            )
            return risk_decode(
                self.start_probs,
                self.transition_probs,
                log_probs,
                expected.posteriors,
                expected.log_likelihood,
                data.lengths,
                weights,
                admissible=admissible or method == "posterior_viterbi",
            )
