"""GAN losses: non-saturating, hinge and WGAN-GP, the gradient penalty, and PacGAN packing.

The discriminator returns one unnormalised score per (packed) sample; every loss here is
written in terms of those scores so that all GAN-like models in probgen (GAN, CycleGAN,
StyleGAN) share one definition.

* ``non_saturating``: Goodfellow et al. (2014), the discriminator minimises the binary
  cross-entropy of real vs fake, the generator minimises ``-log D(G(z))`` (softplus of the
  negated score) rather than ``log(1 - D(G(z)))``, which saturates early in training.
* ``hinge``: Lim & Ye (2017) / Miyato et al. (2018): ``relu(1 - real) + relu(1 + fake)`` for
  the discriminator, ``-fake`` for the generator.
* ``wgan_gp``: Gulrajani et al. (2017): the critic minimises ``fake - real`` and the penalty
  ``(||grad_x critic(x_hat)|| - 1)^2`` at random interpolates ``x_hat`` (added by the caller
  with its weight, see :func:`gradient_penalty`), the generator minimises ``-fake``.

:func:`r1_penalty` is the zero-centred penalty on real data of Mescheder et al. (2018),
``E ||grad_x D(x_real)||^2``, which any of the losses may add (weighted by ``gamma / 2``): it
makes the discriminator flat on the data so that the two-player game converges instead of
circling, the fix that paper gives for mixtures of Gaussians.

Example:
    >>> import torch
    >>> from probgen.gan.losses import discriminator_loss, generator_loss, pack_samples
    >>> real, fake = torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.5])
    >>> float(discriminator_loss(real, fake, "hinge"))
    0.75
    >>> float(generator_loss(fake, "wgan_gp"))
    0.25
    >>> pack_samples(torch.zeros(6, 2), 3).shape
    torch.Size([2, 6])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen.core.errors import DataError

LOSSES = ("non_saturating", "hinge", "wgan_gp")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise DataError(f"loss must be one of {LOSSES}, got {loss!r}")


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor, loss: str) -> Tensor:
    """Discriminator (critic) loss, a scalar to minimise; WGAN-GP's without its penalty.

    Args:
        real_scores: Scores of real (packed) samples, any shape.
        fake_scores: Scores of generated (packed) samples, any shape.
        loss: One of :data:`LOSSES`.

    Returns:
        The scalar loss (mean over samples of each term).
    """
    _check_loss(loss)
    if loss == "non_saturating":
        # BCE with logits: -log sigmoid(real) - log(1 - sigmoid(fake)).
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if loss == "hinge":
        return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()
    return fake_scores.mean() - real_scores.mean()


def generator_loss(fake_scores: Tensor, loss: str) -> Tensor:
    """Generator loss, a scalar to minimise.

    Args:
        fake_scores: Discriminator scores of generated (packed) samples.
        loss: One of :data:`LOSSES`.

    Returns:
        The scalar loss.
    """
    _check_loss(loss)
    if loss == "non_saturating":
        return F.softplus(-fake_scores).mean()
    return -fake_scores.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP penalty: mean of ``(||grad critic(x_hat)||_2 - 1)^2`` at random interpolates.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per row (per packed
    sample when the inputs are packed). The gradient norm is taken over all non-batch
    dimensions. The result is differentiable with respect to the critic's parameters
    (``create_graph=True``), so it can be added to the critic loss.

    Args:
        critic: Callable mapping a batch ``(n, ...)`` to scores ``(n,)`` or ``(n, 1)``.
        real: Real batch ``(n, ...)``.
        fake: Generated batch of the same shape (detached from the generator or not; only
            the interpolates' gradient is used).
        generator: Optional torch generator for the interpolation weights.

    Returns:
        The scalar penalty (without its weight).
    """
    if real.shape != fake.shape:
        raise DataError(
            f"fake has shape {tuple(fake.shape)}, real has {tuple(real.shape)}; they must match"
        )
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, dtype=real.dtype, device="cpu").to(real.device)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.reshape(grad.shape[0], -1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1 penalty (Mescheder et al. 2018): mean over rows of ``||grad_x critic(x)||_2^2``.

    Taken at the real (packed) inputs themselves; differentiable with respect to the critic's
    parameters (``create_graph=True``). The caller adds it with weight ``gamma / 2``.

    Args:
        critic: Callable mapping a batch ``(n, ...)`` to scores ``(n,)``.
        real: Real batch ``(n, ...)``.

    Returns:
        The scalar penalty (without its weight).

    Example:
        >>> import torch
        >>> w = torch.tensor([3.0, 4.0])
        >>> float(r1_penalty(lambda x: x @ w, torch.ones(5, 2)))  # ||w||^2
        25.0
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.reshape(grad.shape[0], -1).square().sum(1).mean()


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """PacGAN packing (Lin et al. 2018): m consecutive samples become one discriminator input.

    ``(n, d) -> (n // m, m * d)`` by concatenating features, and ``(n, C, H, W) ->
    (n // m, m * C, H, W)`` by concatenating channels; row ``j`` of the result holds samples
    ``j*m, ..., j*m + m - 1``.

    Args:
        x: Batch ``(n, ...)``.
        pack: The packing degree ``m >= 1``; it must divide ``n``.

    Returns:
        The packed batch.

    Raises:
        DataError: naming ``pack`` when it is not a positive integer dividing ``n``.
    """
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise DataError(f"pack must be a positive integer, got {pack!r}")
    n = x.shape[0]
    if n % pack != 0:
        raise DataError(f"pack={pack} does not divide the batch of {n} samples")
    if pack == 1:
        return x
    if x.dim() == 2:
        return x.reshape(n // pack, pack * x.shape[1])
    if x.dim() == 4:
        c, h, w = x.shape[1:]
        return x.reshape(n // pack, pack * c, h, w)
    # Any other rank: concatenate along the first feature dimension.
    return x.reshape(n // pack, pack * x.shape[1], *x.shape[2:])
