"""PixelCNN: causal receptive field (pixels and channels), no blind spot, normalisation, fit."""

from __future__ import annotations

import itertools

import pytest
import torch

from probgen.core.errors import DataError, NotFittedError
from probgen.core.testing import check_density
from probgen.deep.autoregressive import PixelCNN

pytestmark = pytest.mark.usefixtures("seeded_global_torch")


def _input_gradient(model: PixelCNN, channel: int, row: int, column: int) -> torch.Tensor:
    """max over a few random inputs of |d logits(channel, row, column) / d input|: (C, H, W).

    Several inputs, because a ReLU that happens to be off for one input hides a connection.
    """
    shape = (4, model.n_channels, model.height, model.width)
    generator = torch.Generator().manual_seed(row * 31 + column)
    levels = torch.rand(shape, generator=generator, dtype=torch.float64) * (model.n_levels - 1)
    levels.requires_grad_(True)
    output = model.logits(levels)[:, channel, :, row, column]
    # Weight the levels differently so that no derivative cancels in the sum.
    weights = torch.arange(1, model.n_levels + 1, dtype=torch.float64)
    (gradient,) = torch.autograd.grad((output * weights).sum(), levels)
    return gradient.abs().amax(0)


@pytest.mark.parametrize("image_shape", [(5, 6), (3, 4, 4), (2, 3, 3)])
def test_receptive_field_is_causal_over_pixels_and_channels(image_shape):
    # 16 features per channel group: with fewer, a group can start with all its ReLUs off.
    model = PixelCNN(image_shape, n_levels=4, n_filters=48, n_layers=3, first_kernel_size=3)
    model = model.double()
    channels, height, width = model.n_channels, model.height, model.width
    for channel, row, column in itertools.product(range(channels), range(height), range(width)):
        gradient = _input_gradient(model, channel, row, column)
        for c, i, j in itertools.product(range(channels), range(height), range(width)):
            later = (i, j) > (row, column) or ((i, j) == (row, column) and c >= channel)
            if later:
                assert gradient[c, i, j] == 0, (channel, row, column, c, i, j)
        # Channels before `channel` of the same pixel are seen (type A then B masks).
        for c in range(channel):
            assert gradient[c, row, column] > 0


def test_no_blind_spot_above_and_to_the_right():
    # A plain masked-convolution PixelCNN misses pixels up and to the right; the gated
    # vertical/horizontal stacks see every earlier pixel within their reach.
    model = PixelCNN((7, 7), n_levels=2, n_filters=8, n_layers=3, first_kernel_size=3).double()
    row, column = 4, 3
    gradient = _input_gradient(model, 0, row, column)[0]
    assert bool((gradient[:row] > 0).all())
    assert bool((gradient[row, :column] > 0).all())
    assert bool((gradient[row, column:] == 0).all() and (gradient[row + 1 :] == 0).all())


@pytest.mark.parametrize(("image_shape", "n_levels"), [((2, 2), 3), ((2, 2, 2), 2), ((1, 3, 3), 2)])
def test_exp_log_prob_sums_to_one(image_shape, n_levels):
    model = PixelCNN(image_shape, n_levels=n_levels, n_filters=8, n_layers=2, first_kernel_size=3)
    model = model.double().init_for_evaluation()
    support = model.enumerate_support()
    assert support.shape[1:] == torch.Size(image_shape)
    total = torch.logsumexp(model.log_prob(support), 0).item()
    assert abs(total) < 1e-10


def test_fit_recovers_a_known_distribution_of_tiny_images():
    # 2x2 binary images: a mixture of two stripe patterns with independent pixel noise.
    support = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float64)
    patterns = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    flips = (support[None] != patterns[:, None]).sum(-1)
    probability = (0.5 * 0.9 ** (4 - flips) * 0.1**flips).sum(0)
    generator = torch.Generator().manual_seed(0)
    index = torch.multinomial(probability, 2000, True, generator=generator)
    images = support[index].reshape(-1, 2, 2)
    model = PixelCNN((2, 2), n_filters=16, n_layers=2, first_kernel_size=3).double()
    model.fit(images, n_epochs=30, batch_size=200, learning_rate=2e-2, seed=0)
    fitted = model.log_prob(support.reshape(-1, 2, 2)).exp()
    kl = (probability * (probability.log() - fitted.log())).sum().item()
    assert kl < 0.03


def test_sample_shapes_and_levels():
    model = PixelCNN((2, 3, 3), n_levels=5, n_filters=6, n_layers=2).init_for_evaluation()
    draws = model.sample(7, seed=0)
    assert draws.shape == (7, 2, 3, 3) and draws.dtype == torch.long
    assert int(draws.min()) >= 0 and int(draws.max()) <= 4
    assert torch.isfinite(model.log_prob(draws)).all()
    assert model.log_prob(draws.reshape(7, 1, 2, 3, 3).expand(7, 2, 2, 3, 3)).shape == (7, 2)


def test_contract_suite():
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(120, 3, 3, generator=generator) < 0.3).long()
    model = PixelCNN((3, 3), n_filters=8, n_layers=2, first_kernel_size=3)
    report = check_density(model, images, fit_options={"n_epochs": 2, "seed": 0})
    assert abs(report["log_total_probability"]) < 1e-4


def test_bad_input_is_refused_with_clear_errors():
    model = PixelCNN((4, 4), n_filters=4, n_layers=1)
    with pytest.raises(NotFittedError):
        model.log_prob(torch.zeros(1, 4, 4))
    model.init_for_evaluation()
    with pytest.raises(DataError, match=r"x has shape \(2, 5, 4\)"):
        model.log_prob(torch.zeros(2, 5, 4))
    with pytest.raises(DataError, match="binary"):
        model.log_prob(torch.full((1, 4, 4), 3))
    with pytest.raises(DataError, match="whole numbers"):
        model.log_prob(torch.full((1, 4, 4), 0.5))
    with pytest.raises(DataError, match="NaN"):
        model.log_prob(torch.full((1, 4, 4), float("nan")))
    grey = PixelCNN((1, 4, 4), n_levels=4, n_filters=4, n_layers=1).init_for_evaluation()
    with pytest.raises(DataError, match="grey levels 0..3"):
        grey.log_prob(torch.full((1, 1, 4, 4), 4))
    with pytest.raises(DataError, match="image_shape"):
        PixelCNN((4,))
    with pytest.raises(DataError, match="kernel_size"):
        PixelCNN((4, 4), kernel_size=4)
    with pytest.raises(DataError, match="too many"):
        PixelCNN((5, 5), n_filters=4, n_layers=1).enumerate_support()


@pytest.mark.gpu
def test_cuda_matches_cpu():
    model = PixelCNN((2, 2), n_levels=3, n_filters=8, n_layers=2).double().init_for_evaluation()
    support = model.enumerate_support()
    expected = model.log_prob(support)
    model.to("cuda")
    torch.testing.assert_close(model.log_prob(support).cpu(), expected)
    assert model.sample(3, seed=0).device.type == "cuda"
