"""GAN losses, the gradient penalty (against finite differences) and PacGAN packing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from probgen.core.errors import DataError
from probgen.gan.losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pack_samples,
)
from probgen.gan.networks import MLPDiscriminator


def test_losses_match_their_definitions():
    real = torch.tensor([2.0, -0.5, 0.3])
    fake = torch.tensor([-1.0, 1.5])
    bce = F.binary_cross_entropy_with_logits
    expected_ns = bce(real, torch.ones(3)) + bce(fake, torch.zeros(2))
    assert torch.allclose(discriminator_loss(real, fake, "non_saturating"), expected_ns)
    assert torch.allclose(generator_loss(fake, "non_saturating"), bce(fake, torch.ones(2)))
    hinge = (1 - real).clamp(min=0).mean() + (1 + fake).clamp(min=0).mean()
    assert torch.allclose(discriminator_loss(real, fake, "hinge"), hinge)
    assert torch.allclose(discriminator_loss(real, fake, "wgan_gp"), fake.mean() - real.mean())
    for loss in ("hinge", "wgan_gp"):
        assert torch.allclose(generator_loss(fake, loss), -fake.mean())
    with pytest.raises(DataError, match="loss must be one of"):
        generator_loss(fake, "lsgan")
    assert LOSSES == ("non_saturating", "hinge", "wgan_gp")


def test_gradient_penalty_equals_finite_differences():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    real, fake = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))
    # The same interpolation weights, then central differences of the critic per coordinate.
    eps = torch.rand((5, 1), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    points = eps * real + (1 - eps) * fake
    h = 1e-6
    grads = torch.zeros_like(points)
    with torch.no_grad():
        for j in range(3):
            step = torch.zeros(3, dtype=torch.float64)
            step[j] = h
            grads[:, j] = (critic(points + step) - critic(points - step)).squeeze(-1) / (2 * h)
    expected = ((grads.norm(dim=1) - 1) ** 2).mean()
    assert float(penalty.detach()) == pytest.approx(float(expected), rel=1e-7, abs=1e-9)
    # Differentiable in the critic's weights, as WGAN-GP needs.
    penalty.backward()
    assert critic[0].weight.grad is not None and bool(critic[0].weight.grad.abs().sum() > 0)


def test_gradient_penalty_of_a_unit_slope_critic_is_zero():
    weight = torch.tensor([[0.6, 0.8]])  # |grad| = 1 everywhere

    def critic(x):
        return x @ weight.T

    penalty = gradient_penalty(critic, torch.randn(4, 2), torch.randn(4, 2))
    assert float(penalty) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DataError, match="fake has shape"):
        gradient_penalty(critic, torch.randn(4, 2), torch.randn(3, 2))


def test_pack_samples_shapes_and_order():
    x = torch.arange(12.0).reshape(6, 2)
    packed = pack_samples(x, 3)
    assert packed.shape == (2, 6)
    assert packed[1].tolist() == x[3:6].reshape(-1).tolist()  # row j = samples j*m .. j*m+m-1
    images = torch.randn(8, 3, 5, 5)
    packed = pack_samples(images, 4)
    assert packed.shape == (2, 12, 5, 5)
    assert torch.equal(packed[1, 3:6], images[5])
    assert pack_samples(x, 1) is x
    with pytest.raises(DataError, match="pack=4"):
        pack_samples(x, 4)
    with pytest.raises(DataError, match="pack must be a positive integer"):
        pack_samples(x, 0)


def test_packed_discriminator_judges_its_samples_jointly():
    torch.manual_seed(0)
    m, d = 4, 2
    disc = MLPDiscriminator(d, (16,), pack=m)
    assert disc.net[0].in_features == m * d
    x = torch.randn(3 * m, d)
    scores = disc(pack_samples(x, m))
    assert scores.shape == (3,)
    for j in range(m):  # every member of group 1 moves group 1's score, and only it
        moved = x.clone()
        moved[m + j] += 1.0
        new = disc(pack_samples(moved, m))
        assert not math.isclose(float(new[1]), float(scores[1]), abs_tol=1e-7)
        assert torch.equal(new[[0, 2]], scores[[0, 2]])
