"""PixelRNN: causal receptive fields (Jacobian), normalisation by brute force, sampling
against the model's own masses, fitting, save/load and bad input, for both layer types."""

from __future__ import annotations

import itertools

import pytest
import torch

from probgen.core.errors import DataError, NotFittedError
from probgen.core.io import load
from probgen.core.testing import check_density
from probgen.deep.pixelrnn import PixelRNN
from probgen.deep.pixelrnn_layers import DiagonalBiLSTMLayer, RowLSTMLayer, skew, unskew

pytestmark = pytest.mark.usefixtures("seeded_global_torch")

LAYERS = ["row", "diagonal"]


def _input_gradient(model: PixelRNN, channel: int, row: int, column: int) -> torch.Tensor:
    """max over a few random inputs of |d logits(channel, row, column) / d input|: (C, H, W).

    Several inputs, because a saturated gate for one input can hide a connection.
    """
    shape = (3, model.n_channels, model.height, model.width)
    generator = torch.Generator().manual_seed(row * 31 + column)
    levels = torch.rand(shape, generator=generator, dtype=torch.float64) * (model.n_levels - 1)
    levels.requires_grad_(True)
    output = model.logits(levels)[:, channel, :, row, column]
    weights = torch.arange(1, model.n_levels + 1, dtype=torch.float64)
    (gradient,) = torch.autograd.grad((output * weights).sum(), levels)
    return gradient.abs().amax(0)


def _later(c: int, i: int, j: int, channel: int, row: int, column: int) -> bool:
    return (i, j) > (row, column) or ((i, j) == (row, column) and c >= channel)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("image_shape", "n_levels"), [((4, 5), 2), ((2, 3, 3), 3)])
def test_logits_never_depend_on_the_current_or_later_pixels(layer, image_shape, n_levels):
    model = PixelRNN(
        image_shape, n_levels=n_levels, layer=layer, n_hidden=6, n_layers=2, first_kernel_size=3
    ).double()
    channels, height, width = model.n_channels, model.height, model.width
    for channel, row, column in itertools.product(range(channels), range(height), range(width)):
        gradient = _input_gradient(model, channel, row, column)
        for c, i, j in itertools.product(range(channels), range(height), range(width)):
            if _later(c, i, j, channel, row, column):
                assert gradient[c, i, j] == 0, (layer, channel, row, column, c, i, j)
        # The earlier channels of the same pixel are seen (mask A first, then B).
        for c in range(channel):
            assert gradient[c, row, column] > 0


def test_diagonal_bilstm_sees_every_earlier_pixel_and_row_lstm_has_a_blind_spot():
    # One layer and a 3x3 first convolution: the Diagonal BiLSTM's receptive field is the
    # whole past; the Row LSTM's is a triangle above the pixel (far top-right pixels unseen).
    row, column = 4, 1
    seen = {}
    for layer in LAYERS:
        model = PixelRNN((5, 6), layer=layer, n_hidden=4, n_layers=1, first_kernel_size=3)
        gradient = _input_gradient(model.double(), 0, row, column)[0]
        seen[layer] = gradient > 0
        assert bool((gradient[row, column:] == 0).all())
    past = torch.zeros(5, 6, dtype=torch.bool)
    past[:row] = True
    past[row, :column] = True
    assert bool(seen["diagonal"][past].all())
    assert not bool(seen["row"][past].all())
    assert not bool(seen["row"][row - 1, 5])  # the row above, far right: out of the triangle


def _seen(layer: str, **settings) -> torch.Tensor:
    model = PixelRNN((6, 7), layer=layer, n_hidden=4, n_layers=1, **settings).double()
    return _input_gradient(model, 0, 5, 1)[0] > 0


def test_kernel_sizes_widen_the_receptive_field():
    narrow = _seen("row", first_kernel_size=3, row_kernel_size=3)
    for wider in (
        _seen("row", first_kernel_size=3, row_kernel_size=5),
        _seen("row", first_kernel_size=5, row_kernel_size=3),
    ):
        assert bool((wider >= narrow).all()) and int(wider.sum()) > int(narrow.sum())
    # The Diagonal BiLSTM sees the whole past with any first kernel; its other kernels are fixed.
    whole_past = _seen("diagonal", first_kernel_size=3)
    assert torch.equal(whole_past, _seen("diagonal", first_kernel_size=5))


def test_layer_sizes_follow_the_settings():
    model = PixelRNN((2, 4, 4), n_levels=3, n_hidden=5, n_layers=3, output_filters=7)
    assert len(model.layers) == 3 and model.n_hidden == 6  # rounded up to a multiple of C
    assert model.layers[0].state_to_state.in_channels == 6
    assert model.input_layer.out_channels == 12 and model.output_hidden.out_channels == 8
    assert model.output_logits.out_channels == 2 * 3
    binary = PixelRNN((4, 4), n_levels=2, n_hidden=4, n_layers=1, layer="diagonal")
    assert binary.output_logits.out_channels == 1  # one Bernoulli logit per pixel
    assert isinstance(binary.layers[0], DiagonalBiLSTMLayer)
    assert isinstance(model.layers[0], RowLSTMLayer)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(
    ("image_shape", "n_levels"), [((2, 2), 2), ((3, 3), 2), ((2, 2), 3), ((2, 2, 2), 2)]
)
def test_exp_log_prob_sums_to_one_over_every_image(layer, image_shape, n_levels):
    model = PixelRNN(
        image_shape, n_levels=n_levels, layer=layer, n_hidden=4, n_layers=2, first_kernel_size=3
    )
    model = model.double().init_for_evaluation()
    support = model.enumerate_support()
    assert support.shape == (n_levels ** support[0].numel(), *image_shape)
    total = torch.logsumexp(model.log_prob(support), 0).item()
    assert abs(total) < 1e-10


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("image_shape", "n_levels"), [((4, 5), 2), ((2, 3, 4), 3)])
def test_cached_raster_pass_equals_the_whole_image_pass(layer, image_shape, n_levels):
    # Sampling walks the pixels with the rows above cached; it must compute the same logits.
    model = PixelRNN(
        image_shape, n_levels=n_levels, layer=layer, n_hidden=6, n_layers=2, first_kernel_size=5
    ).double()
    images = model._to_images(torch.randint(0, n_levels, (3, *image_shape)))
    cached = model._raster_logits(images.clone())
    torch.testing.assert_close(cached, model.logits(images), rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", LAYERS)
def test_samples_follow_the_model_distribution_and_are_seeded(layer):
    model = PixelRNN((2, 2), layer=layer, n_hidden=4, n_layers=1, first_kernel_size=3, seed=3)
    model = model.double().init_for_evaluation()
    support = model.enumerate_support()
    probability = model.log_prob(support).exp()
    draws = model.sample(4000, seed=0)
    assert draws.shape == (4000, 2, 2) and draws.dtype == torch.long
    assert torch.isfinite(model.log_prob(draws)).all()
    codes = (draws.reshape(-1, 4) * torch.tensor([8, 4, 2, 1])).sum(-1)
    frequency = torch.bincount(codes, minlength=16).double() / len(codes)
    # Total variation of 16 cells from 4000 draws: about 0.03 by chance; a sampler that
    # ignored the conditionals (independent pixels, wrong order) would be far off.
    assert 0.5 * (frequency - probability).abs().sum().item() < 0.06
    assert torch.equal(model.sample(5, seed=7), model.sample(5, seed=7))
    assert not torch.equal(model.sample(40, seed=7), model.sample(40, seed=8))


def test_grey_level_samples_stay_in_range():
    model = PixelRNN((2, 3, 3), n_levels=5, layer="diagonal", n_hidden=4, n_layers=1)
    draws = model.init_for_evaluation().sample(6, seed=0)
    assert draws.shape == (6, 2, 3, 3) and int(draws.min()) >= 0 and int(draws.max()) <= 4
    assert torch.isfinite(model.log_prob(draws)).all()
    assert model.log_prob(draws.reshape(6, 1, 2, 3, 3).expand(6, 2, 2, 3, 3)).shape == (6, 2)


def test_skew_and_unskew_put_each_diagonal_in_a_column():
    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    skewed = skew(image)[0, 0]
    for i, j in itertools.product(range(3), range(4)):
        assert skewed[i, i + j] == image[0, 0, i, j]
    assert int((skewed == 0).sum()) == 3 * 2 + 1  # the padding, and the image's own zero
    assert torch.equal(unskew(skew(image), 4), image)


@pytest.mark.parametrize("layer", LAYERS)
def test_fit_recovers_a_known_distribution_of_tiny_images(layer):
    # 2x2 binary images: a mixture of two stripe patterns with independent pixel noise. The
    # best model of independent pixels is 0.22 nats from it; 600 draws leave about 0.01.
    support = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float64)
    patterns = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    flips = (support[None] != patterns[:, None]).sum(-1)
    probability = (0.5 * 0.9 ** (4 - flips) * 0.1**flips).sum(0)
    generator = torch.Generator().manual_seed(0)
    index = torch.multinomial(probability, 600, True, generator=generator)
    images = support[index].reshape(-1, 2, 2)
    model = PixelRNN((2, 2), layer=layer, n_hidden=8, n_layers=1, first_kernel_size=3).double()
    model.fit(images, n_epochs=20, batch_size=100, learning_rate=3e-2, seed=0)
    losses = [record["train_loss"] for record in model.history_]
    assert losses[-1] < losses[0]
    fitted = model.log_prob(support.reshape(-1, 2, 2)).exp()
    kl = (probability * (probability.log() - fitted.log())).sum().item()
    assert kl < 0.03


@pytest.mark.parametrize("layer", LAYERS)
def test_contract_suite_and_save_load_round_trip(layer, tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(120, 3, 3, generator=generator) < 0.3).long()
    model = PixelRNN((3, 3), layer=layer, n_hidden=4, n_layers=2, first_kernel_size=3)
    report = check_density(
        model, images, fit_options={"n_epochs": 2, "seed": 0}, n_samples=50
    )
    assert abs(report["log_total_probability"]) < 1e-4
    model.save(tmp_path / "model.probgen")
    loaded = load(tmp_path / "model.probgen")
    assert isinstance(loaded, PixelRNN) and loaded.layer == layer
    torch.testing.assert_close(loaded.log_prob(images[:10]), model.log_prob(images[:10]))
    assert torch.equal(loaded.sample(3, seed=1), model.sample(3, seed=1))


def test_seed_fixes_the_initial_weights_and_the_fit():
    images = (torch.rand(64, 3, 3) < 0.5).long()

    def fitted(seed: int) -> torch.Tensor:
        model = PixelRNN((3, 3), layer="diagonal", n_hidden=4, n_layers=1, seed=seed)
        return model.fit(images, n_epochs=1, batch_size=16).log_prob(images[:4])

    torch.testing.assert_close(fitted(1), fitted(1), rtol=0, atol=0)
    assert not torch.equal(fitted(1), fitted(2))


def test_resume_from_checkpoint_matches_an_uninterrupted_fit(tmp_path):
    images = (torch.rand(48, 3, 3) < 0.4).long()
    settings = {"batch_size": 16, "learning_rate": 1e-2, "seed": 0}

    def fresh() -> PixelRNN:
        return PixelRNN((3, 3), layer="diagonal", n_hidden=4, n_layers=1, seed=1).double()

    straight = fresh().fit(images, n_epochs=3, **settings)
    fresh().fit(images, n_epochs=2, checkpoint_dir=tmp_path, **settings)
    resumed = fresh().fit(images, n_epochs=3, checkpoint_dir=tmp_path, resume=True, **settings)
    assert resumed.n_iter_ == 3 and len(resumed.history_) == 3
    torch.testing.assert_close(resumed.log_prob(images), straight.log_prob(images))


def test_bad_input_is_refused_with_clear_errors():
    model = PixelRNN((4, 4), n_hidden=4, n_layers=1)
    with pytest.raises(NotFittedError):
        model.log_prob(torch.zeros(1, 4, 4))
    with pytest.raises(NotFittedError):
        model.sample(1)
    model.init_for_evaluation()
    with pytest.raises(DataError, match=r"x has shape \(2, 5, 4\)"):
        model.log_prob(torch.zeros(2, 5, 4))
    with pytest.raises(DataError, match="binary"):
        model.log_prob(torch.full((1, 4, 4), 3))
    with pytest.raises(DataError, match="whole numbers"):
        model.log_prob(torch.full((1, 4, 4), 0.5))
    with pytest.raises(DataError, match="NaN"):
        model.log_prob(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(DataError, match="data"):
        model.fit(torch.full((3, 4, 4), 2))
    with pytest.raises(DataError, match="validation_data"):
        model.fit(torch.zeros(3, 4, 4), validation_data=torch.zeros(3, 4, 5))
    with pytest.raises(DataError, match="n must be"):
        model.sample(0)
    with pytest.raises(DataError, match="layer must be one of 'row', 'diagonal'"):
        PixelRNN((4, 4), layer="column")
    with pytest.raises(DataError, match="image_shape"):
        PixelRNN((4,))
    with pytest.raises(DataError, match="row_kernel_size"):
        PixelRNN((4, 4), row_kernel_size=2)
    with pytest.raises(DataError, match="first_kernel_size"):
        PixelRNN((4, 4), first_kernel_size=4)
    with pytest.raises(DataError, match="n_levels"):
        PixelRNN((4, 4), n_levels=1)
    with pytest.raises(DataError, match="n_hidden"):
        PixelRNN((4, 4), n_hidden=0)
    with pytest.raises(DataError, match="too many"):
        PixelRNN((5, 5), n_hidden=4, n_layers=1).enumerate_support()


@pytest.mark.gpu
@pytest.mark.parametrize("layer", LAYERS)
def test_cuda_matches_cpu(layer):
    model = PixelRNN((2, 2), n_levels=3, layer=layer, n_hidden=4, n_layers=2).double()
    model.init_for_evaluation()
    support = model.enumerate_support()
    expected = model.log_prob(support)
    model.to("cuda")
    torch.testing.assert_close(model.log_prob(support).cpu(), expected)
    assert model.sample(3, seed=0).device.type == "cuda"
