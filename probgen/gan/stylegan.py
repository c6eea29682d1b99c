"""A style-based generator (small-scale StyleGAN2) under the density contract: `StyleGAN`.

The generator is a mapping network ``z -> w`` and a synthesis network that starts from a
learned constant and takes one ``w`` per layer, each modulating (and demodulating) its
convolution's weights, with per-layer noise maps entering through learned per-channel scales
(`probgen.gan.style_networks`). Training mixes styles: with probability
``mixing_probability`` a minibatch's images take their first layers' styles from one latent
and the rest from another, at a random crossover layer, so that layers learn to act
separately. A running mean of ``w`` (``w_avg``) supports the truncation trick
(``w' = w_avg + truncation * (w - w_avg)``).

Like `probgen.GAN` the model has no density (`log_prob_kind` is ``"none"``), trains through
the shared loop with a discriminator step (repeated ``n_critic`` times) and a generator step,
each with its own Adam optimiser, records per-epoch diagnostics, stops a diverging fit with
`FitError`, can keep an exponential moving average of the generator's weights (``ema``), and
its generator is a Pyro program (`StyleGAN.model`).

Example:
    >>> import torch
    >>> from probgen.gan.stylegan import StyleGAN
    >>> images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> gan = StyleGAN((1, 8, 8), latent_dim=8, style_dim=8, n_mapping_layers=1, channels=8,
    ...                discriminator_channels=8, n_upsamplings=1, n_epochs=1, batch_size=16,
    ...                seed=0).fit(images)
    >>> gan.sample(4, seed=0).shape, gan.n_styles
    (torch.Size([4, 1, 8, 8]), 4)
    >>> gan.sample(2, seed=0, mix=2).shape  # styles of layers 2.. from a second latent
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import copy
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError, NoDensityError
from probgen.gan._images import check_image_shape, check_images, to_signed, to_unit
from probgen.gan.losses import LOSSES, discriminator_loss, generator_loss, gradient_penalty
from probgen.gan.model import _FIT_OPTIONS, _non_negative, _positive
from probgen.gan.stability import Diagnostics, check_scores, fit_adversarial
from probgen.gan.style_networks import MappingNetwork, StyleDiscriminator, SynthesisNetwork

__all__ = ["StyleGAN"]


class _Generator(nn.Module):
    """Mapping and synthesis networks together (one module, so EMA copies both)."""

    def __init__(self, mapping: MappingNetwork, synthesis: SynthesisNetwork) -> None:
        super().__init__()
        self.mapping = mapping
        self.synthesis = synthesis


class StyleGAN(Model):
    """A small style-based GAN for images with values in [0, 1].

    Args:
        image_shape: (channels, height, width); height and width must divide by
            ``2**n_upsamplings``.
        latent_dim: dimension of the standard normal latent z.
        style_dim: dimension of the intermediate latent w.
        n_mapping_layers: layers of the mapping network.
        channels: feature channels at the base resolution (halved at each upsampling).
        n_upsamplings: resolution doublings after the learned constant (the constant is
            ``(height, width) / 2**n_upsamplings``); ``n_styles = 2 * n_upsamplings + 2``.
        discriminator_channels: widest layer of the discriminator.
        loss: "non_saturating" (StyleGAN's), "hinge" or "wgan_gp".
        gp_weight: weight of WGAN-GP's gradient penalty (loss "wgan_gp" only).
        r1_weight: weight gamma of the R1 penalty ``gamma / 2 * E ||grad D(x_real)||^2``
            (Mescheder et al. 2018, StyleGAN's regulariser); 0 for none.
        n_critic: discriminator steps per generator step.
        mixing_probability: probability that a training minibatch mixes two latents' styles.
        w_avg_decay: decay of the running mean of w (kept for the truncation trick).
        generator_learning_rate, discriminator_learning_rate: Adam's learning rates.
        betas: Adam's (beta1, beta2) for both optimisers (StyleGAN2's (0, 0.99)).
        ema: decay of an exponential moving average of the generator's weights, used by
            `sample`, `synthesize` and `model` when set (e.g. 0.999); None for none.
        divergence_threshold: a discriminator score beyond this magnitude stops the fit with
            `FitError`, keeping the last good parameters.
        n_epochs, batch_size: training settings (overridable in `fit`).
        seed: seed of the initial weights and of training; None draws fresh randomness.

    Example:
        >>> StyleGAN((1, 28, 28), channels=16, seed=0).n_styles
        6
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int] = (1, 28, 28),
        *,
        latent_dim: int = 64,
        style_dim: int = 64,
        n_mapping_layers: int = 4,
        channels: int = 64,
        n_upsamplings: int = 2,
        discriminator_channels: int = 64,
        loss: str = "non_saturating",
        gp_weight: float = 10.0,
        r1_weight: float = 0.0,
        n_critic: int = 1,
        mixing_probability: float = 0.9,
        w_avg_decay: float = 0.995,
        generator_learning_rate: float = 2e-3,
        discriminator_learning_rate: float = 2e-3,
        betas: tuple[float, float] | list[float] = (0.0, 0.99),
        ema: float | None = None,
        divergence_threshold: float = 1e4,
        n_epochs: int = 20,
        batch_size: int = 64,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "image_shape")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.style_dim = check_positive_int(style_dim, "style_dim")
        self.n_mapping_layers = check_positive_int(n_mapping_layers, "n_mapping_layers")
        self.channels = check_positive_int(channels, "channels")
        self.n_upsamplings = check_positive_int(n_upsamplings, "n_upsamplings", minimum=0)
        self.discriminator_channels = check_positive_int(
            discriminator_channels, "discriminator_channels"
        )
        self.loss = check_choice(loss, "loss", LOSSES)
        self.gp_weight = _non_negative(gp_weight, "gp_weight")
        self.r1_weight = _non_negative(r1_weight, "r1_weight")
        self.n_critic = check_positive_int(n_critic, "n_critic")
        self.mixing_probability = _probability(mixing_probability, "mixing_probability")
        self.w_avg_decay = _probability(w_avg_decay, "w_avg_decay")
        self.generator_learning_rate = _positive(generator_learning_rate, "generator_learning_rate")
        self.discriminator_learning_rate = _positive(
            discriminator_learning_rate, "discriminator_learning_rate"
        )
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise DataError(f"betas must be two numbers in [0, 1), got {betas}")
        self.betas = betas
        if ema is not None and not (isinstance(ema, (int, float)) and 0.0 < ema < 1.0):
            raise DataError(f"ema must be None or a decay in (0, 1), got {ema!r}")
        self.ema = None if ema is None else float(ema)
        self.divergence_threshold = _positive(divergence_threshold, "divergence_threshold")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = seed
        self.event_shape = torch.Size(self.image_shape)

        with seeded_initialisation(seed):
            self.generator = _Generator(
                MappingNetwork(self.latent_dim, self.style_dim, self.n_mapping_layers),
                SynthesisNetwork(
                    self.image_shape, self.style_dim, self.channels, self.n_upsamplings
                ),
            )
            self.discriminator = StyleDiscriminator(
                self.image_shape, self.discriminator_channels, self.n_upsamplings
            )
        self.register_buffer("w_avg", torch.zeros(self.style_dim))
        if self.ema is not None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self._diagnostics = Diagnostics()
        self.eval()

    @property
    def n_styles(self) -> int:
        """How many per-layer styles the synthesis network takes (its layers + the output)."""
        return self.generator.synthesis.n_styles

    # ---- the contract ----------------------------------------------------------------------
    def log_prob(self, x: Any) -> Tensor:
        """A GAN has no density: always raises `NoDensityError`."""
        raise NoDensityError(
            "StyleGAN has no density (log_prob_kind 'none'): judge it by its samples with "
            "probgen.evaluate(model, data) or the sample metrics of probgen.metrics "
            "(Frechet distance, KID, precision/recall on classifier features)"
        )

    def _sampler(self) -> _Generator:
        return self.generator_ema if self.ema is not None else self.generator

    def mapping(self, z: Any) -> Tensor:
        """w = mapping(z) for latents z (n, latent_dim), by the sampling generator."""
        z = as_tensor(z, "z", event_shape=(self.latent_dim,)).reshape(-1, self.latent_dim)
        with torch.no_grad():
            return self._sampler().mapping(z.to(device=self.device, dtype=self.dtype))

    def _styles(
        self,
        net: _Generator,
        z: Tensor,
        *,
        z_mix: Tensor | None = None,
        crossover: int | None = None,
        truncation: float = 1.0,
    ) -> Tensor:
        """Per-layer styles (n, n_styles, style_dim): w(z) before `crossover`, w(z_mix) from
        it on, each truncated towards `w_avg`."""
        w = net.mapping(z)
        ws = w[:, None].repeat(1, self.n_styles, 1)
        if z_mix is not None and crossover is not None:
            ws[:, crossover:] = net.mapping(z_mix)[:, None]
        if truncation != 1.0:
            ws = self.w_avg + truncation * (ws - self.w_avg)
        return ws

    @torch.no_grad()
    def synthesize(
        self, w_per_layer: Any, *, seed: int | None = None, noise: bool = True
    ) -> Tensor:
        """Images in [0, 1] from explicit per-layer styles.

        Args:
            w_per_layer: (n, n_styles, style_dim), e.g. from `mapping`, with rows replaced to
                mix styles; or (n, style_dim) for the same w at every layer.
            seed: seed of the noise maps.
            noise: False synthesises without noise (every noise map zero).

        Returns:
            Images (n, C, H, W).
        """
        self.check_fitted("synthesize")
        ws = as_tensor(w_per_layer, "w_per_layer").to(device=self.device, dtype=self.dtype)
        if ws.dim() == 2 and ws.shape[1] == self.style_dim:
            ws = ws[:, None].expand(-1, self.n_styles, -1)
        if ws.dim() != 3 or tuple(ws.shape[1:]) != (self.n_styles, self.style_dim):
            raise DataError(
                f"w_per_layer has shape {tuple(ws.shape)}; give (n, {self.n_styles}, "
                f"{self.style_dim}) or (n, {self.style_dim})"
            )
        net = self._sampler()
        maps = net.synthesis.noise(ws.shape[0], self.make_generator(seed)) if noise else None
        return to_unit(_in_eval(net, lambda: net.synthesis(ws, maps)))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        truncation: float = 1.0,
        mix: int | None = None,
    ) -> Tensor:
        """Draw `n` images (n, C, H, W) in [0, 1].

        Args:
            n: number of images.
            seed: seed of the latents and noise maps.
            truncation: psi of the truncation trick (1 for none; smaller trades variety for
                typical images).
            mix: a crossover layer in 1..n_styles-1: layers before it take the styles of one
                latent, the rest those of a second latent; None for one latent.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        truncation = float(truncation)
        if mix is not None and not (
            isinstance(mix, int) and not isinstance(mix, bool) and 1 <= mix < self.n_styles
        ):
            raise DataError(f"mix must be a layer in 1..{self.n_styles - 1} or None, got {mix!r}")
        generator = self.make_generator(seed)
        options = {"device": self.device, "dtype": self.dtype, "generator": generator}
        z = torch.randn(n, self.latent_dim, **options)
        net = self._sampler()
        maps = net.synthesis.noise(n, generator)
        # Drawn last, so that mixing leaves the first latent and the noise as they were.
        z_mix = torch.randn(n, self.latent_dim, **options) if mix is not None else None

        def draw() -> Tensor:
            ws = self._styles(net, z, z_mix=z_mix, crossover=mix, truncation=truncation)
            return net.synthesis(ws, maps)

        return to_unit(_in_eval(net, draw))

    def model(self, n: int = 1) -> Tensor:
        """The generator as a Pyro program: ``z ~ N(0, I)`` (site "z"), the image (site "x").

        The noise maps are drawn from torch's global generator inside the program.
        """
        self.check_fitted("model")
        n = check_positive_int(n, "n")
        net = self._sampler()
        zeros = torch.zeros((), device=self.device, dtype=self.dtype)
        prior = dist.Normal(zeros, zeros + 1.0).expand([n, self.latent_dim]).to_event(1)
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", prior)
            image = to_unit(net.synthesis(self._styles(net, z), net.synthesis.noise(n)))
            return pyro.deterministic("x", image, event_dim=3)

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, **options: Any) -> StyleGAN:
        """Fit adversarially through the shared loop (discriminator step, then generator step).

        Args:
            data: images in [0, 1]: (n, C, H, W), (n, H, W) for one channel, or flat rows.
            **options: `fit_model` settings: n_epochs, batch_size, seed (override the
                model's), lr_schedule, grad_clip, checkpoint_dir, checkpoint_every, resume,
                progress, max_steps.

        Returns:
            self, with `history_`: per epoch both losses and gradient norms,
            ``discriminator_accuracy`` (or ``critic_gap`` and ``gradient_penalty``),
            ``max_abs_score``, ``r1_penalty`` when on, and ``mixed_fraction``.

        Raises:
            DataError: malformed data or options.
            FitError: the fit diverged; the model keeps the last good epoch's parameters.
        """
        unknown = sorted(set(options) - set(_FIT_OPTIONS))
        if unknown:
            raise DataError(
                f"StyleGAN.fit got unknown options {unknown}; it takes {', '.join(_FIT_OPTIONS)}"
                " (the learning rates and loss are constructor settings)"
            )
        settings = {"n_epochs": self.n_epochs, "batch_size": self.batch_size, "seed": self.seed}
        settings.update(options)
        x, _ = check_images(data, self.image_shape, "data", device=self.device, dtype=self.dtype)
        history = fit_adversarial(
            self, (to_signed(x),), _discriminator_step, _generator_step, **settings
        )
        self.history_ = history
        self.n_iter_ = len(history)
        self._mark_fitted()
        return self

    def _draw(self, n: int) -> Tensor:
        """Training draws (signed images), mixing styles with `mixing_probability`."""
        options = {"device": self.device, "dtype": self.dtype}
        z = torch.randn(n, self.latent_dim, **options)
        net = self.generator
        w = net.mapping(z)
        if self.training and torch.is_grad_enabled():  # the generator step only
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().mean(0), 1.0 - self.w_avg_decay)
        ws = w[:, None].repeat(1, self.n_styles, 1)
        mixed = self.n_styles > 1 and float(torch.rand(())) < self.mixing_probability
        if mixed:
            crossover = int(torch.randint(1, self.n_styles, ()))
            ws[:, crossover:] = net.mapping(torch.randn(n, self.latent_dim, **options))[:, None]
        self._diagnostics.add(mixed_fraction=torch.tensor(float(mixed)))
        return net.synthesis(ws, net.synthesis.noise(n))


def _discriminator_step(gan: StyleGAN, batch: Any) -> Tensor:
    x = batch[0]
    n = x.shape[0]
    with torch.no_grad():
        fake = gan._draw(n)
    real_input = x.detach().requires_grad_(gan.r1_weight > 0)
    scores = gan.discriminator(torch.cat([real_input, fake]))
    real_scores, fake_scores = scores[:n], scores[n:]
    loss = discriminator_loss(real_scores, fake_scores, gan.loss)
    figures: dict[str, Tensor] = {}
    if gan.loss == "wgan_gp":
        figures["max_abs_score"] = check_scores(
            scores - scores.detach().mean(), gan.divergence_threshold, "critic scores"
        )
        penalty = gradient_penalty(gan.discriminator, x, fake)
        loss = loss + gan.gp_weight * penalty
        figures["critic_gap"] = real_scores.detach().mean() - fake_scores.detach().mean()
        figures["gradient_penalty"] = penalty.detach()
    else:
        figures["max_abs_score"] = check_scores(scores, gan.divergence_threshold)
        correct = torch.cat([real_scores.detach() > 0, fake_scores.detach() < 0])
        figures["discriminator_accuracy"] = correct.float().mean()
    if gan.r1_weight > 0:
        (grad,) = torch.autograd.grad(real_scores.sum(), real_input, create_graph=True)
        r1 = grad.square().reshape(n, -1).sum(1).mean()
        loss = loss + 0.5 * gan.r1_weight * r1
        figures["r1_penalty"] = r1.detach()
    gan._diagnostics.add(**figures)
    return loss


def _generator_step(gan: StyleGAN, batch: Any) -> Tensor:
    fake = gan._draw(batch[0].shape[0])
    discriminator = gan.discriminator
    # No gradient for the discriminator's weights: a third less backward work.
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.requires_grad_(False)
    try:
        scores = discriminator(fake)
    finally:
        for p, flag in zip(discriminator.parameters(), flags):
            p.requires_grad_(flag)
    return generator_loss(scores, gan.loss)


def _in_eval(net: nn.Module, compute: Any) -> Tensor:
    was_training = net.training
    net.eval()
    try:
        return compute()
    finally:
        net.train(was_training)


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise DataError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
