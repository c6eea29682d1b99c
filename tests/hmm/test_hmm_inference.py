"""HMM inference functions against brute-force enumeration of every state path."""

from __future__ import annotations

import itertools

import pytest
import torch

from probgen.hmm import inference

DTYPE = torch.float64


def random_hmm(n_states: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    start = torch.rand(n_states, dtype=DTYPE, generator=generator) + 0.1
    transition = torch.rand(n_states, n_states, dtype=DTYPE, generator=generator) + 0.1
    return start / start.sum(), transition / transition.sum(-1, keepdim=True)


def random_emissions(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(*shape, dtype=DTYPE, generator=generator)


def brute_force(start, transition, emission_log_probs):
    """Joint log p(x, z) of every path z of one sequence (length, n_states)."""
    length, n_states = emission_log_probs.shape
    paths = list(itertools.product(range(n_states), repeat=length))
    scores = []
    for path in paths:
        score = start[path[0]].log() + emission_log_probs[0, path[0]]
        for t in range(1, length):
            score = score + transition[path[t - 1], path[t]].log()
            score = score + emission_log_probs[t, path[t]]
        scores.append(score)
    return torch.tensor(paths), torch.stack(scores)


def brute_posteriors(paths, scores, n_states):
    weights = torch.softmax(scores, 0)
    length = paths.shape[1]
    marginals = torch.zeros(length, n_states, dtype=DTYPE)
    for t in range(length):
        marginals[t].index_add_(0, paths[:, t], weights)
    return marginals


def brute_transition_counts(paths, scores, n_states):
    weights = torch.softmax(scores, 0)
    counts = torch.zeros(n_states, n_states, dtype=DTYPE)
    for path, weight in zip(paths.tolist(), weights):
        for a, b in zip(path[:-1], path[1:]):
            counts[a, b] += weight
    return counts


@pytest.mark.parametrize("n_states,length,seed", [(2, 5, 0), (3, 4, 1), (4, 3, 2), (3, 1, 3)])
def test_forward_backward_viterbi_match_enumeration(n_states, length, seed):
    start, transition = random_hmm(n_states, seed)
    emissions = random_emissions((2, length, n_states), seed + 10)
    stats = inference.expected_statistics(start, transition, emissions)
    paths, best = inference.viterbi(start.log(), transition.log(), emissions)
    expected_counts = torch.zeros(n_states, n_states, dtype=DTYPE)
    for i in range(2):
        all_paths, scores = brute_force(start, transition, emissions[i])
        torch.testing.assert_close(stats.log_likelihood[i], torch.logsumexp(scores, 0))
        torch.testing.assert_close(
            stats.posteriors[i], brute_posteriors(all_paths, scores, n_states)
        )
        expected_counts += brute_transition_counts(all_paths, scores, n_states)
        assert paths[i].tolist() == all_paths[scores.argmax()].tolist()
        torch.testing.assert_close(best[i], scores.max())
    torch.testing.assert_close(stats.transition_counts, expected_counts)
    torch.testing.assert_close(stats.start_counts, stats.posteriors[:, 0].sum(0))
    torch.testing.assert_close(
        inference.log_likelihood(start, transition, emissions), stats.log_likelihood
    )


def test_ragged_lengths_match_enumeration_of_each_sequence():
    n_states = 3
    start, transition = random_hmm(n_states, 5)
    lengths = torch.tensor([4, 2, 1, 3])
    emissions = random_emissions((4, 4, n_states), 6)
    stats = inference.expected_statistics(start, transition, emissions, lengths)
    paths, best = inference.viterbi(start.log(), transition.log(), emissions, lengths)
    for i, length in enumerate(lengths.tolist()):
        all_paths, scores = brute_force(start, transition, emissions[i, :length])
        torch.testing.assert_close(stats.log_likelihood[i], torch.logsumexp(scores, 0))
        torch.testing.assert_close(
            stats.posteriors[i, :length], brute_posteriors(all_paths, scores, n_states)
        )
        assert (stats.posteriors[i, length:] == 0).all()
        assert paths[i, :length].tolist() == all_paths[scores.argmax()].tolist()
        assert (paths[i, length:] == -1).all()
        torch.testing.assert_close(best[i], scores.max())
    assert stats.transition_counts.sum().item() == pytest.approx(float((lengths - 1).sum()))


def test_time_major_and_batch_first_agree():
    start, transition = random_hmm(3, 7)
    emissions = random_emissions((5, 6, 3), 8)
    lengths = torch.tensor([6, 3, 5, 1, 6])
    batch_first = inference.expected_statistics(start, transition, emissions, lengths)
    time_major = inference.expected_statistics(
        start, transition, emissions.transpose(0, 1).contiguous(), lengths, time_major=True
    )
    torch.testing.assert_close(batch_first.posteriors, time_major.posteriors.transpose(0, 1))
    torch.testing.assert_close(batch_first.transition_counts, time_major.transition_counts)
    torch.testing.assert_close(batch_first.log_likelihood, time_major.log_likelihood)


@pytest.mark.parametrize("length", [1, 2, 7, 1000, 2049])
def test_parallel_scan_matches_sequential_pass(length):
    start, transition = random_hmm(4, 9)
    emissions = random_emissions((3, length, 4), 10)
    lengths = torch.tensor([length, max(1, length // 2), 1])
    sequential = inference.log_likelihood(
        start, transition, emissions, lengths, method="sequential"
    )
    scanned = inference.forward_parallel_scan(start, transition, emissions, lengths)
    torch.testing.assert_close(scanned, sequential, rtol=1e-10, atol=1e-8)


def test_differentiable_log_likelihood_matches_and_has_gradients():
    start, transition = random_hmm(3, 11)
    emissions = random_emissions((2, 4, 3), 12).requires_grad_(True)
    lengths = torch.tensor([4, 3])
    value = inference.hmm_log_likelihood(start.log(), transition.log(), emissions, lengths)
    reference = inference.log_likelihood(start, transition, emissions.detach(), lengths)
    torch.testing.assert_close(value.detach(), reference)
    value.sum().backward()
    # d log p(x) / d log b_t(s) is the posterior p(z_t = s | x).
    posteriors = inference.posteriors(start, transition, emissions.detach(), lengths)
    torch.testing.assert_close(emissions.grad, posteriors)


def test_differentiable_log_likelihood_broadcasts_over_parameter_batches():
    starts, transitions = zip(*[random_hmm(2, seed) for seed in range(3)])
    start = torch.stack(starts)
    transition = torch.stack(transitions)
    emissions = random_emissions((3, 5, 2), 13)
    batched = inference.hmm_log_likelihood(start.log(), transition.log(), emissions)
    for i in range(3):
        single = inference.log_likelihood(start[i], transition[i], emissions[i : i + 1])
        torch.testing.assert_close(batched[i], single[0])


@pytest.mark.parametrize(
    ("n_states", "length", "batch", "ragged"),
    [(2, 100, (), False), (3, 33, (4,), True), (5, 2, (2,), False), (32, 17, (), False)],
)
def test_differentiable_scan_matches_sequential_pass_and_its_gradients(
    monkeypatch, n_states, length, batch, ragged
):
    generator = torch.Generator().manual_seed(n_states * length)
    shape = (*batch, n_states, n_states)
    transition_logits = torch.randn(shape, dtype=DTYPE, generator=generator)
    initial_logits = torch.randn(n_states, dtype=DTYPE, generator=generator)
    emissions = 3.0 * torch.randn(*batch, length, n_states, dtype=DTYPE, generator=generator)
    lengths = None
    if ragged:
        lengths = torch.randint(1, length + 1, batch, generator=generator)

    def value_and_gradients():
        inputs = [t.clone().requires_grad_(True) for t in (transition_logits, emissions)]
        value = inference.hmm_log_likelihood(initial_logits, *inputs, lengths)
        value.sum().backward()
        return value.detach(), [t.grad for t in inputs]

    scanned, scanned_grads = value_and_gradients()
    monkeypatch.setattr(inference, "DIFFERENTIABLE_SCAN_MAX_STATES", 0)
    sequential, sequential_grads = value_and_gradients()
    torch.testing.assert_close(scanned, sequential, rtol=1e-10, atol=1e-9)
    for got, expected in zip(scanned_grads, sequential_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_differentiable_scan_matches_enumeration():
    start, transition = random_hmm(3, 18)
    emissions = random_emissions((5, 3), 19)
    value = inference.hmm_log_likelihood(start.log(), transition.log(), emissions)
    _, scores = brute_force(start, transition, emissions)
    torch.testing.assert_close(value, torch.logsumexp(scores, 0))


def test_differentiable_log_likelihood_of_impossible_series_is_minus_infinity():
    start, transition = random_hmm(2, 16)
    emissions = random_emissions((3, 6, 2), 17)
    emissions[0, 4] = -torch.inf
    value = inference.hmm_log_likelihood(start.log(), transition.log(), emissions)
    assert value[0] == -torch.inf
    reference = inference.log_likelihood(start, transition, emissions[1:])
    torch.testing.assert_close(value[1:], reference)


def test_impossible_observation_gives_minus_infinity_without_nan():
    start, transition = random_hmm(2, 14)
    emissions = random_emissions((2, 4, 2), 15)
    emissions[0, 2] = -torch.inf
    stats = inference.expected_statistics(start, transition, emissions)
    assert stats.log_likelihood[0] == -torch.inf
    assert torch.isfinite(stats.log_likelihood[1])
    all_paths, scores = brute_force(start, transition, emissions[1])
    torch.testing.assert_close(stats.log_likelihood[1], torch.logsumexp(scores, 0))
    assert not torch.isnan(stats.posteriors[1]).any()


def test_float32_agrees_with_float64():
    start, transition = random_hmm(5, 16)
    emissions = random_emissions((8, 300, 5), 17)
    exact = inference.log_likelihood(start, transition, emissions)
    single = inference.log_likelihood(start.float(), transition.float(), emissions.float())
    torch.testing.assert_close(single.double(), exact, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("n_states,length", [(2, 1), (3, 4), (2, 300), (4, 1100)])
def test_scan_forward_backward_matches_sequential(n_states, length):
    start, transition = random_hmm(n_states, 18)
    emissions = random_emissions((3, length, n_states), 19)
    lengths = torch.tensor([length, max(1, length - 3), max(1, length // 3)])
    sequential = inference.expected_statistics(
        start, transition, emissions, lengths, method="sequential"
    )
    scanned = inference.expected_statistics(start, transition, emissions, lengths, method="scan")
    torch.testing.assert_close(scanned.log_likelihood, sequential.log_likelihood)
    torch.testing.assert_close(scanned.posteriors, sequential.posteriors)
    torch.testing.assert_close(scanned.transition_counts, sequential.transition_counts)
    torch.testing.assert_close(scanned.start_counts, sequential.start_counts)


def test_state_major_core_matches_enumeration_and_reuses_its_workspace():
    n_states = 3
    start, transition = random_hmm(n_states, 20)
    lengths = torch.tensor([5, 2, 4])
    mask_tm = inference.length_mask(lengths, 3, 5, torch.device("cpu")).t()
    workspace = inference.Workspace()
    first = random_emissions((5, n_states, 3), 21)  # (max_length, n_states, n_sequences)
    second = random_emissions((5, n_states, 3), 22)
    for log_probs in (second, first):  # the second call reuses the first call's buffers
        probs, offsets = inference.scale_state_major(log_probs.clone(), mask_tm)
        stats = inference.expected_statistics_state_major(
            start, transition, probs, offsets, mask_tm, workspace=workspace
        )
    probs, offsets = inference.scale_state_major(first.clone(), mask_tm)
    forward_only = inference.log_likelihood_state_major(start, transition, probs, offsets, mask_tm)
    expected_counts = torch.zeros(n_states, n_states, dtype=DTYPE)
    for i, length in enumerate(lengths.tolist()):
        all_paths, scores = brute_force(start, transition, first[:length, :, i])
        torch.testing.assert_close(stats.log_likelihood[i], torch.logsumexp(scores, 0))
        torch.testing.assert_close(forward_only[i], torch.logsumexp(scores, 0))
        torch.testing.assert_close(
            stats.posteriors[:length, :, i], brute_posteriors(all_paths, scores, n_states)
        )
        assert (stats.posteriors[length:, :, i] == 0).all()
        expected_counts += brute_transition_counts(all_paths, scores, n_states)
    torch.testing.assert_close(stats.transition_counts, expected_counts)
    torch.testing.assert_close(stats.start_counts, stats.posteriors[0].sum(-1))


def test_scale_state_major_marks_impossible_and_padded_steps():
    log_probs = random_emissions((4, 3, 2), 23)  # (max_length, n_states, n_sequences)
    log_probs[1, :, 0] = -torch.inf  # impossible under every state
    log_probs[2, 1, 1] = -torch.inf  # impossible under one state only
    mask_tm = torch.tensor([[True, True], [True, True], [True, True], [False, True]])
    probs, offsets = inference.scale_state_major(log_probs.clone(), mask_tm)
    assert not torch.isnan(probs).any() and not torch.isnan(offsets).any()
    assert offsets[1, 0] == -torch.inf and (probs[1, :, 0] == 0).all()
    assert (probs[3, :, 0] == 1).all() and offsets[3, 0] == 0
    assert probs[2, 1, 1] == 0
    real = mask_tm.clone()
    real[1, 0] = False
    rebuilt = (probs.log() + offsets.unsqueeze(1)).permute(0, 2, 1)[real]
    torch.testing.assert_close(rebuilt, log_probs.permute(0, 2, 1)[real])
    # Every real step's largest probability is one; the impossible step's are all zero.
    expected_peaks = torch.ones(4, 2, dtype=DTYPE)
    expected_peaks[1, 0] = 0.0
    torch.testing.assert_close(probs.amax(1), expected_peaks)


@pytest.mark.parametrize("ragged", [False, True])
def test_state_outer_storage_matches_enumeration_and_its_workspace_keeps_it(ragged):
    """The e-step core on state-outer storage (as diagonal Gaussian EM uses it)."""
    n_states, n_sequences, max_length = 3, 4, 5
    start, transition = random_hmm(n_states, 30)
    lengths = torch.tensor([5, 2, 4, 5]) if ragged else torch.full((n_sequences,), max_length)
    mask_tm = inference.length_mask(lengths, n_sequences, max_length, torch.device("cpu")).t()
    mask_tm = mask_tm if ragged else None
    log_probs = random_emissions((max_length, n_states, n_sequences), 31)
    workspace = inference.Workspace()
    stored = workspace.state_major(
        "emission_probs", tuple(log_probs.shape), log_probs, state_outer=True
    )
    assert inference.is_state_outer(stored)
    probs, offsets = inference.scale_state_major(stored.copy_(log_probs), mask_tm)
    stats = inference.expected_statistics_state_major(
        start, transition, probs, offsets, mask_tm, workspace=workspace
    )
    # The loops kept the storage of the emissions, so the pair sums were one product.
    assert inference.is_state_outer(stats.posteriors)
    expected_counts = torch.zeros(n_states, n_states, dtype=DTYPE)
    for i, length in enumerate(lengths.tolist()):
        all_paths, scores = brute_force(start, transition, log_probs[:length, :, i])
        torch.testing.assert_close(stats.log_likelihood[i], torch.logsumexp(scores, 0))
        torch.testing.assert_close(
            stats.posteriors[:length, :, i], brute_posteriors(all_paths, scores, n_states)
        )
        assert (stats.posteriors[length:, :, i] == 0).all()
        expected_counts += brute_transition_counts(all_paths, scores, n_states)
    torch.testing.assert_close(stats.transition_counts, expected_counts)


def test_scale_state_major_takes_base_two_log_densities():
    log_probs = random_emissions((4, 3, 2), 32)
    log_probs[1, :, 0] = -torch.inf
    natural = inference.scale_state_major(log_probs.clone())
    base_two = inference.scale_state_major(log_probs / torch.log(torch.tensor(2.0)), base_two=True)
    torch.testing.assert_close(base_two[0], natural[0])
    torch.testing.assert_close(base_two[1], natural[1])
    assert base_two[1][1, 0] == -torch.inf
    torch.testing.assert_close(
        natural[0].amax(1)[natural[1].isfinite()], torch.ones(7, dtype=DTYPE)
    )


@pytest.mark.parametrize("state_outer", [False, True])
def test_summed_step_products_match_einsum_in_either_storage(state_outer):
    left = random_emissions((6, 3, 5), 33)
    right = random_emissions((6, 5, 4), 34)
    if state_outer:
        left = inference.state_major_empty(tuple(left.shape), left).copy_(left)
    expected = torch.einsum("tsb,tbk->sk", left, right)
    torch.testing.assert_close(inference.summed_step_products(left, right), expected)
    # The expected transition counts' form: steps 0..T-2 against steps 1..T-1, transposed.
    shifted = inference.summed_step_products(left[:-1], left[1:].transpose(1, 2))
    torch.testing.assert_close(shifted, torch.einsum("tib,tjb->ij", left[:-1], left[1:]))
