"""On CUDA, the GAN, VAE-GAN, WaveNet/WaveGAN and PixelRNN recipes score as on the CPU, sample on
the device, and train there; the autoencoder and Deep SVDD detectors score as on the CPU; ChEES
samples a CUDA target.

Marker `gpu`: skipped without CUDA (tests/conftest.py), run where a device is lent. Each test
fits the recipe's SMOKE setting on the CPU, moves a copy to CUDA and compares what both compute
from the same parameters; draws come from different generators on the two devices, so samples
are checked for device, shape and finiteness, not equality. cuDNN may use TF32 convolutions,
hence the relative tolerance on log-likelihoods.
"""

from __future__ import annotations

import copy

import pytest
import torch
from probgen.recipes import registry
from probgen.recipes._shared_data import SharedDataMissing

from probgen.core.testing import _take

pytestmark = pytest.mark.gpu

DENSITY_RECIPES = ["wavenet_tones", "wavenet_jsb", "pixelrnn_mnist"]
SAMPLE_ONLY_RECIPES = ["gan_digits", "stylegan_mnist", "vaegan_mnist", "wavegan_tones"]


def _fitted(name: str):
    recipe = registry.get(name)
    try:
        model, data = recipe.smoke_build(), recipe.smoke_data()
    except SharedDataMissing as error:
        pytest.skip(str(error))
    model.fit(data, **recipe.smoke_fit)
    return recipe, model, data


def _sample_options(model) -> dict:
    return {"length": 12} if getattr(model, "is_sequence_model", False) else {}


def _all_tensors(value):
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _all_tensors(item)]
    return []


def _check_draws(model, device: str) -> None:
    draws = model.sample(4, seed=0, **_sample_options(model))
    tensors = _all_tensors(draws)
    assert tensors, type(draws)
    for tensor in tensors:
        assert tensor.device.type == device
        assert torch.isfinite(tensor.float()).all()


@pytest.mark.parametrize("name", DENSITY_RECIPES)
def test_density_recipes_score_on_cuda_as_on_cpu(name):
    _, model, data = _fitted(name)
    examples = _take(data, 4)
    on_gpu = copy.deepcopy(model).to("cuda")
    cpu = model.log_prob(examples).detach().double()
    gpu = on_gpu.log_prob(examples).detach().double().cpu()
    torch.testing.assert_close(gpu, cpu, rtol=2e-3, atol=1e-2)
    _check_draws(on_gpu, "cuda")


@pytest.mark.parametrize("name", DENSITY_RECIPES + SAMPLE_ONLY_RECIPES)
def test_recipes_train_and_sample_on_cuda(name):
    recipe = registry.get(name)
    try:
        model, data = recipe.smoke_build(), recipe.smoke_data()
    except SharedDataMissing as error:
        pytest.skip(str(error))
    model = model.to("cuda")
    model.fit(data, **recipe.smoke_fit)
    assert all(p.device.type == "cuda" for p in model.parameters())
    _check_draws(model, "cuda")


def test_cyclegan_translates_on_cuda_as_on_cpu():
    _, model, (domain_a, _) = _fitted("cyclegan_mnist")
    images = domain_a[:4]
    on_gpu = copy.deepcopy(model).to("cuda")
    cpu = model.translate(images, direction="a_to_b").detach()
    gpu = on_gpu.translate(images.cuda(), direction="a_to_b").detach()
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-2, atol=1e-2)


def test_chees_samples_a_cuda_target():
    loc = torch.tensor([1.0, -1.0], dtype=torch.float64, device="cuda")
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64, device="cuda")

    def log_density(x: torch.Tensor) -> torch.Tensor:
        assert x.device.type == "cuda"
        return torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)

    import probgen

    samples = probgen.sample_chains(
        log_density,
        "chees",
        initial=torch.zeros(2, dtype=torch.float64, device="cuda"),
        num_chains=32,
        num_samples=500,
        warmup=500,
        seed=0,
        progress=False,
    )
    draws = torch.as_tensor(samples["x"]).reshape(-1, 2).double()
    torch.testing.assert_close(draws.mean(0), torch.tensor([1.0, -1.0]).double(), atol=0.1, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([1.0, 2.0]).double(), rtol=0.1, atol=0)


@pytest.mark.parametrize("kind", ["autoencoder", "deep_svdd"])
def test_anomaly_detectors_score_on_cuda_as_on_cpu(kind):
    from probgen.anomaly import AutoencoderDetector, DeepSVDD

    g = torch.Generator().manual_seed(0)
    basis = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, -1.0, 0.0, 1.0]])
    normal = torch.randn(300, 2, generator=g) @ basis + 0.05 * torch.randn(300, 6, generator=g)
    outliers = torch.randn(30, 6, generator=g) * 1.5
    settings = dict(hidden_dims=(16,), n_epochs=5, batch_size=64, learning_rate=1e-2, seed=0)
    if kind == "autoencoder":
        detector = AutoencoderDetector(code_dim=2, **settings).fit(normal)
    else:
        detector = DeepSVDD(rep_dim=4, **settings).fit(normal)
    points = torch.cat([normal[:20], outliers])
    cpu = torch.as_tensor(detector.score_samples(points)).double()
    on_gpu = copy.deepcopy(detector).to("cuda")
    gpu = torch.as_tensor(on_gpu.score_samples(points.cuda())).double().cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
