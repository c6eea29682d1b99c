"""WaveNet: causality, normalisation, cached generation, conditioning, ragged input, fitting."""

from __future__ import annotations

import time

import pytest
import torch

from probgen.core.data import Sequences
from probgen.core.errors import DataError, NotFittedError
from probgen.core.io import load
from probgen.core.testing import check_density
from probgen.deep.wavenet import WaveNet, mu_law_decode, mu_law_encode

pytestmark = pytest.mark.usefixtures("seeded_global_torch")

SMALL = dict(residual_channels=6, skip_channels=5, n_layers=3, seed=1)


def _categorical(**options) -> WaveNet:
    return WaveNet(n_levels=3, **{**SMALL, **options}).double().init_for_evaluation()


def _bernoulli(**options) -> WaveNet:
    return WaveNet("bernoulli", n_channels=2, **{**SMALL, **options}).double().init_for_evaluation()


def _total_probability(model: WaveNet, length: int, **options) -> float:
    support = model.enumerate_support(length)
    return torch.logsumexp(model.log_prob(support, **options).detach(), 0).exp().item()


# ---- mu-law ---------------------------------------------------------------------------------
def test_mu_law_round_trip():
    codes = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(codes)), codes)
    waveform = torch.linspace(-1, 1, 20001)
    codes = mu_law_encode(waveform)
    decoded = mu_law_decode(codes)
    # A level's cell spans half a step on each side in the compressed domain, so in linear terms
    # a value decodes to within one adjacent step; the steps are fine near silence and coarse
    # near +-1 (the point of mu-law).
    levels = mu_law_decode(torch.arange(256))
    steps = torch.cat([levels[1:2] - levels[:1], levels[1:] - levels[:-1]])
    wider = torch.maximum(steps, torch.cat([steps[1:], steps[-1:]]))
    assert bool(((decoded - waveform).abs() <= wider[codes] + 1e-6).all())
    assert (decoded - waveform)[waveform.abs() < 0.01].abs().max() < 5e-4
    assert steps[-1] > 50 * steps[128]
    assert mu_law_encode(torch.tensor([0.0]), n_levels=16).item() == 8
    with pytest.raises(DataError, match="waveform"):
        mu_law_encode(torch.tensor([1.5]))
    with pytest.raises(DataError, match="codes"):
        mu_law_decode(torch.tensor([256]))


# ---- oracles: normalisation and causality ---------------------------------------------------
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_categorical_log_prob_sums_to_one_over_all_sequences(kernel_size):
    model = _categorical(kernel_size=kernel_size, n_cycles=2)
    assert _total_probability(model, 5) == pytest.approx(1.0, abs=1e-9)
    assert _total_probability(model, 1) == pytest.approx(1.0, abs=1e-9)


def test_mu_law_input_feeds_the_amplitude_and_keeps_the_model_exact():
    model = _categorical(mu_law_input=True, n_cycles=2)
    assert model.input.in_channels == 3 + 1 + 1  # one-hot, amplitude, begin flag
    features = model.features(torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(features[0, :, 3], mu_law_decode(torch.arange(3), 3).double())
    assert _total_probability(model, 5) == pytest.approx(1.0, abs=1e-9)
    fast = model.sample(4, length=model.receptive_field + 5, seed=2)
    assert torch.equal(fast, model.sample(4, length=fast.shape[1], seed=2, cached=False))
    plain = _categorical(n_cycles=2)
    assert plain.input.in_channels == 3 + 1


def test_bernoulli_and_conditioned_log_prob_sum_to_one():
    assert _total_probability(_bernoulli(), 3) == pytest.approx(1.0, abs=1e-9)
    model = _categorical(condition_dim=2)
    condition = torch.tensor([0.5, -2.0], dtype=torch.float64)
    assert _total_probability(model, 4, condition=condition) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(("kernel_size", "n_layers", "n_cycles"), [(2, 3, 1), (3, 2, 2)])
def test_output_at_t_sees_exactly_the_receptive_field_before_t(kernel_size, n_layers, n_cycles):
    model = _bernoulli(kernel_size=kernel_size, n_layers=n_layers, n_cycles=n_cycles)
    field = model.receptive_field
    assert field == (kernel_size - 1) * sum(2**i for i in range(n_layers)) * n_cycles + 1
    length = field + 6
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(3, length, 2, generator=generator, dtype=torch.float64)
    features.requires_grad_(True)
    logits = model.logits(features)
    for t in range(length):
        (gradient,) = torch.autograd.grad(logits[:, t].sum(), features, retain_graph=True)
        seen = gradient.abs().sum((0, 2))
        # Inputs are the begin step and x_0..x_{t-1}: x_s is seen iff t - field <= s < t.
        for s in range(length):
            if t - field <= s < t:
                assert seen[s] > 0, (t, s)
            else:
                assert seen[s] == 0, (t, s)


# ---- generation -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_categorical, _bernoulli])
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_cached_generation_equals_naive_recomputation(make, kernel_size):
    model = make(kernel_size=kernel_size, n_cycles=2, condition_dim=3)
    condition = torch.randn(5, 3, dtype=torch.float64)
    length = model.receptive_field + 20  # past the point where the naive window slides
    fast = model.sample(5, length=length, condition=condition, seed=7)
    naive = model.sample(5, length=length, condition=condition, seed=7, cached=False)
    assert torch.equal(fast, naive)
    assert not torch.equal(fast, model.sample(5, length=length, condition=condition, seed=8))


def test_samples_follow_exp_log_prob():
    # check_density enumerates all 3**5 sequences and compares sample frequencies with them.
    model = WaveNet(n_levels=3, **SMALL)
    data = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 1, 0, 2, 1, 0]]).repeat(8, 1)
    report = check_density(model, data, fit_options={"n_epochs": 3})
    assert report["log_total_probability"] == pytest.approx(0.0, abs=1e-4)
    assert report["sample_total_variation"] < 0.1


def test_bernoulli_contract_suite():
    model = WaveNet("bernoulli", n_channels=2, **SMALL)
    data = [torch.randint(0, 2, (length, 2)) for length in (4, 7, 5, 6)] * 4
    report = check_density(model, data, fit_options={"n_epochs": 2})
    assert report["sample_shape"] == (200, 5, 2)


@pytest.mark.slow
def test_cached_generation_is_ten_times_faster_at_4000_steps():
    # A standard WaveNet (2 cycles of dilations 1..512, receptive field 2,047), one sequence,
    # one thread; process CPU time, so that other work on a shared machine does not count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = WaveNet(residual_channels=32, skip_channels=64, n_layers=10, n_cycles=2, seed=0)
        model.init_for_evaluation()
        start = time.process_time()
        fast = model.sample(1, length=4000, seed=0)
        cached = time.process_time() - start
        start = time.process_time()
        naive = model.sample(1, length=4000, seed=0, cached=False)
        recomputed = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fast, naive)
    assert recomputed / cached >= 10, (cached, recomputed)


# ---- options --------------------------------------------------------------------------------
def test_ragged_sequences_score_like_separate_sequences():
    model = _categorical()
    short, long = torch.tensor([0, 2, 1]), torch.tensor([1, 1, 0, 2, 2, 1])
    together = model.log_prob([short, long])
    separate = torch.cat([model.log_prob(short[None]), model.log_prob(long[None])])
    torch.testing.assert_close(together, separate)
    # The padding behind a short sequence is ignored, whatever it holds.
    padded = torch.tensor([[0, 2, 1, 2, 2, 2], long.tolist()])
    from_sequences = model.log_prob(Sequences(padded, torch.tensor([3, 6])))
    torch.testing.assert_close(from_sequences, separate)
    steps = model.log_prob_steps([short, long])
    assert steps.shape == (2, 6) and bool((steps[0, 3:] == 0).all())


def test_condition_changes_the_distribution_and_is_learned():
    data = torch.tensor([[0, 0, 0, 0, 0, 0], [2, 2, 2, 2, 2, 2]]).repeat(16, 1)
    condition = torch.tensor([[1.0], [-1.0]]).repeat(16, 1)
    model = WaveNet(n_levels=3, condition_dim=1, **SMALL)
    model.fit(data, condition=condition, n_epochs=60, learning_rate=1e-2, batch_size=32)
    right = model.log_prob(data[:2], condition=condition[:2])
    swapped = model.log_prob(data[:2], condition=condition[:2].flip(0))
    assert bool((right > swapped + 3.0).all())
    draws = model.sample(20, length=4, condition=torch.tensor([-1.0]), seed=0)
    assert (draws == 2).float().mean() > 0.8


def test_fit_learns_a_periodic_sequence_and_records_history():
    data = torch.tensor([[0, 1, 2] * 4, [1, 2, 0] * 4, [2, 0, 1] * 4]).repeat(8, 1)
    model = WaveNet(n_levels=3, **SMALL)
    with pytest.raises(NotFittedError):
        model.log_prob(data)
    model.fit(data, validation_data=data[:3], n_epochs=40, learning_rate=1e-2)
    assert len(model.history_) == model.n_iter_ == 40
    # After the first step the sequence is determined: close to log(1/3) in total.
    assert model.log_prob(data[:3]).mean().item() > -1.1 - 1.0
    # The validation figure is the mean log-likelihood per sequence of validation_data.
    expected = model.log_prob(data[:3]).mean().item()
    assert model.history_[-1]["val_log_prob"] == pytest.approx(expected, abs=1e-4)


def test_dropout_acts_only_in_training_mode():
    model = _categorical(dropout=0.5)
    features = model.features(torch.tensor([[0, 1, 2, 1, 0]]))
    model.train()
    assert not torch.equal(model.logits(features), model.logits(features))
    model.eval()
    assert torch.equal(model.logits(features), model.logits(features))


def test_weight_decay_and_grad_clip_reach_the_optimiser():
    data = torch.randint(0, 3, (16, 6))
    base = WaveNet(n_levels=3, **SMALL).fit(data, n_epochs=5, learning_rate=1e-2)
    decayed = WaveNet(n_levels=3, weight_decay=50.0, **SMALL)
    decayed.fit(data, n_epochs=5, learning_rate=1e-2)
    norm = lambda model: sum(p.norm() ** 2 for p in model.parameters()).item()  # noqa: E731
    assert norm(decayed) < norm(base)
    initial = WaveNet(n_levels=3, **SMALL)
    clipped = WaveNet(n_levels=3, grad_clip=1e-12, **SMALL).fit(data, n_epochs=2)
    for before, after in zip(initial.parameters(), clipped.parameters()):
        torch.testing.assert_close(before, after, atol=1e-4, rtol=0)


def test_seed_fixes_the_initial_weights():
    first, again, other = (WaveNet(n_levels=3, **{**SMALL, "seed": s}) for s in (3, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))


def test_save_and_load_keep_a_conditioned_bernoulli_model(tmp_path):
    model = _bernoulli(condition_dim=2, kernel_size=3)
    rolls = torch.randint(0, 2, (3, 9, 2)).double()
    condition = torch.randn(3, 2, dtype=torch.float64)
    model.save(tmp_path / "wavenet.probgen")
    restored = load(tmp_path / "wavenet.probgen")
    assert restored.kernel_size == 3 and restored.condition_dim == 2
    torch.testing.assert_close(
        restored.log_prob(rolls, condition=condition), model.log_prob(rolls, condition=condition)
    )
    assert torch.equal(
        restored.sample(2, length=6, condition=condition[:2], seed=0),
        model.sample(2, length=6, condition=condition[:2], seed=0),
    )


def test_bad_input_names_the_argument():
    model = _categorical()
    with pytest.raises(DataError, match=r"x\[0\].*levels 0..2"):
        model.log_prob(torch.tensor([[0, 3]]))
    with pytest.raises(DataError, match="x"):
        model.log_prob(torch.tensor([[0.5, 1.0]]))
    rolls = _bernoulli()
    with pytest.raises(DataError, match="binary"):
        rolls.log_prob(torch.full((1, 3, 2), 2.0))
    with pytest.raises(DataError, match="x"):
        rolls.log_prob(torch.zeros(1, 3, 5))
    conditioned = _categorical(condition_dim=2)
    with pytest.raises(DataError, match="condition is required"):
        conditioned.log_prob(torch.tensor([[0, 1]]))
    with pytest.raises(DataError, match="condition"):
        conditioned.log_prob(torch.tensor([[0, 1]]), condition=torch.zeros(2, 2))
    with pytest.raises(DataError, match="condition was given"):
        model.log_prob(torch.tensor([[0, 1]]), condition=torch.zeros(1, 2))
    with pytest.raises(DataError, match="n_channels"):
        WaveNet("bernoulli")
    with pytest.raises(DataError, match="output"):
        WaveNet("gaussian")
    with pytest.raises(DataError, match="mu_law_input"):
        WaveNet("bernoulli", n_channels=2, mu_law_input=True)
    with pytest.raises(DataError, match="kernel_size"):
        WaveNet(kernel_size=1)
    with pytest.raises(DataError, match="validation_condition"):
        WaveNet(n_levels=3, **SMALL).fit(torch.zeros(4, 3), validation_condition=torch.zeros(4, 1))
    with pytest.raises(DataError, match="length"):
        model.sample(2, length=0)
    with pytest.raises(DataError, match="too many"):
        WaveNet(n_levels=256).enumerate_support(3)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    model = _categorical(condition_dim=1)
    support = model.enumerate_support(3)
    condition = torch.tensor([0.3], dtype=torch.float64)
    expected = model.log_prob(support, condition=condition)
    model.to("cuda")
    torch.testing.assert_close(model.log_prob(support, condition=condition).cpu(), expected)
    fast = model.sample(3, length=20, condition=condition, seed=0)
    assert fast.device.type == "cuda"
    assert torch.equal(fast, model.sample(3, length=20, condition=condition, seed=0, cached=False))


def test_resumed_fit_equals_uninterrupted(tmp_path):
    data = [torch.randint(0, 3, (length,)) for length in (5, 8, 6, 7)] * 4
    settings = {"batch_size": 4, "learning_rate": 1e-2, "seed": 0}
    straight = WaveNet(n_levels=3, dropout=0.2, **SMALL).fit(data, n_epochs=3, **settings)
    WaveNet(n_levels=3, dropout=0.2, **SMALL).fit(
        data, n_epochs=1, checkpoint_dir=tmp_path, **settings
    )
    resumed = WaveNet(n_levels=3, dropout=0.2, **SMALL).fit(
        data, n_epochs=3, checkpoint_dir=tmp_path, resume=True, **settings
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(resumed.history_) == 3
