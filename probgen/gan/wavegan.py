"""WaveGAN (Donahue, McAuley, Puckette, 2019): a 1-D DCGAN for raw waveforms, with phase shuffle.

The generator maps z ~ N(0, I) through a dense layer to a short feature sequence and then
through transposed 1-D convolutions (kernel 25, stride 4) that each lengthen it four times, to
a waveform in [-1, 1] (tanh). The discriminator mirrors it with strided 1-D convolutions and
leaky ReLUs; after each of its hidden layers *phase shuffle* moves every example's feature
maps by a random whole number of steps in [-n, n] (reflection at the edges), so that it cannot
judge by the periodic artefacts of transposed convolutions. A WaveGAN has no density
(`log_prob_kind` "none"); it is judged by its samples (spectral features and the sample
metrics of `probgen.metrics`). Training uses the GAN family's losses (WGAN-GP by default, as
the paper), packing, weight averaging and divergence test, through the shared loop with two
steps.

Example:
    >>> import torch
    >>> from probgen.gan.wavegan import WaveGAN
    >>> waves = torch.sin(torch.linspace(0, 60, 256)).repeat(16, 1) * 0.5
    >>> gan = WaveGAN(256, latent_dim=8, width=4, n_layers=2, n_critic=1, n_epochs=1,
    ...               batch_size=8, seed=0).fit(waves)
    >>> gan.sample(3, seed=0).shape
    torch.Size([3, 256])
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError, NoDensityError
from probgen.gan.losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pack_samples,
)
from probgen.gan.stability import Diagnostics, check_scores, fit_adversarial

__all__ = ["WaveGAN", "phase_shuffle"]

_KERNEL = 25
_STRIDE = 4
_FIT_OPTIONS = (
    "n_epochs",
    "batch_size",
    "seed",
    "lr_schedule",
    "grad_clip",
    "checkpoint_dir",
    "checkpoint_every",
    "resume",
    "progress",
    "max_steps",
)


def phase_shuffle(x: Tensor, radius: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each example's feature maps (n, C, L) by its own k in [-radius, radius] steps.

    out[i, :, t] = x[i, :, t - k_i], the missing steps filled by reflection.

    Example:
        >>> x = torch.arange(5.0).reshape(1, 1, 5)
        >>> phase_shuffle(x, 0).tolist()
        [[[0.0, 1.0, 2.0, 3.0, 4.0]]]
    """
    if radius == 0:
        return x
    n, channels, length = x.shape
    shifts = torch.randint(-radius, radius + 1, (n,), generator=generator, device="cpu")
    padded = F.pad(x, (radius, radius), mode="reflect")
    index = torch.arange(length)[None, :] + (radius - shifts)[:, None]
    index = index.to(x.device)[:, None, :].expand(n, channels, length)
    return padded.gather(2, index)


class WaveGenerator(nn.Module):
    """z -> waveform (n, length) in [-1, 1]: dense, then `n_layers` x4 transposed convolutions."""

    def __init__(self, latent_dim: int, length: int, width: int, n_layers: int) -> None:
        super().__init__()
        self.base = length // _STRIDE**n_layers
        self.channels = [width * 2 ** (n_layers - 1 - i) for i in range(n_layers)] + [1]
        self.dense = nn.Linear(latent_dim, self.base * self.channels[0])
        self.upsample = nn.ModuleList(
            nn.ConvTranspose1d(c_in, c_out, _KERNEL, stride=_STRIDE, padding=11, output_padding=1)
            for c_in, c_out in zip(self.channels[:-1], self.channels[1:])
        )

    def forward(self, z: Tensor) -> Tensor:
        hidden = torch.relu(self.dense(z)).reshape(z.shape[0], self.channels[0], self.base)
        for index, layer in enumerate(self.upsample):
            hidden = layer(hidden)
            if index < len(self.upsample) - 1:
                hidden = torch.relu(hidden)
        return torch.tanh(hidden[:, 0])


class WaveDiscriminator(nn.Module):
    """Waveforms (n, pack, length) -> scores (n,): strided convolutions with phase shuffle."""

    def __init__(self, length: int, width: int, n_layers: int, pack: int, shuffle: int) -> None:
        super().__init__()
        self.shuffle = shuffle
        channels = [pack] + [width * 2**i for i in range(n_layers)]
        self.downsample = nn.ModuleList(
            nn.Conv1d(c_in, c_out, _KERNEL, stride=_STRIDE, padding=11)
            for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.score = nn.Linear(channels[-1] * (length // _STRIDE**n_layers), 1)

    def forward(self, x: Tensor) -> Tensor:
        hidden = x
        for index, layer in enumerate(self.downsample):
            hidden = F.leaky_relu(layer(hidden), 0.2)
            if self.training and index < len(self.downsample) - 1:
                hidden = phase_shuffle(hidden, self.shuffle)
        return self.score(hidden.flatten(1)).squeeze(-1)


class WaveGAN(Model):
    """WaveGAN for fixed-length waveforms in [-1, 1]; no density (`log_prob_kind` "none").

    Args:
        length: samples per waveform; a multiple of 4**n_layers.
        latent_dim: dimension of the standard normal latent z (100 in the paper).
        width: model size d: the discriminator's first layer has d channels, doubling per
            layer; the generator mirrors it.
        n_layers: transposed / strided convolutions (5 for the paper's 16,384 samples).
        phase_shuffle: radius n of phase shuffle in the discriminator (2 in the paper; 0 off).
        loss: "wgan_gp" (the paper), "hinge" or "non_saturating".
        gp_weight: weight of the WGAN-GP penalty.
        n_critic: discriminator steps per generator step (5 in the paper).
        pack: PacGAN packing degree (m waveforms judged together as m channels).
        generator_learning_rate, discriminator_learning_rate, betas: Adam's settings.
        ema: decay of a moving average of the generator's weights used by `sample`, or None.
        divergence_threshold: a (centred) score beyond this stops the fit with `FitError`.
        n_epochs, batch_size, seed: training settings (overridable in `fit`).

    Example:
        >>> gan = WaveGAN(64, latent_dim=4, width=4, n_layers=2)
        >>> gan.event_shape
        torch.Size([64])
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "n_iter_")

    def __init__(
        self,
        length: int = 1024,
        *,
        latent_dim: int = 32,
        width: int = 16,
        n_layers: int = 3,
        phase_shuffle: int = 2,
        loss: str = "wgan_gp",
        gp_weight: float = 10.0,
        n_critic: int = 5,
        pack: int = 1,
        generator_learning_rate: float = 1e-4,
        discriminator_learning_rate: float = 1e-4,
        betas: tuple[float, float] | list[float] = (0.5, 0.9),
        ema: float | None = None,
        divergence_threshold: float = 1e4,
        n_epochs: int = 20,
        batch_size: int = 32,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.length = check_positive_int(length, "length")
        self.n_layers = check_positive_int(n_layers, "n_layers")
        if self.length % _STRIDE**self.n_layers:
            raise DataError(
                f"length must be a multiple of 4**n_layers = {_STRIDE**self.n_layers} (each "
                f"layer changes the length four times), got {length}"
            )
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.width = check_positive_int(width, "width")
        self.phase_shuffle = check_positive_int(phase_shuffle, "phase_shuffle", minimum=0)
        if self.phase_shuffle >= self.length // _STRIDE ** (self.n_layers - 1) and n_layers > 1:
            raise DataError(f"phase_shuffle={phase_shuffle} is too large for these feature maps")
        self.loss = check_choice(loss, "loss", LOSSES)
        self.gp_weight = _number(gp_weight, "gp_weight", minimum=0.0)
        self.n_critic = check_positive_int(n_critic, "n_critic")
        self.pack = check_positive_int(pack, "pack")
        self.generator_learning_rate = _number(generator_learning_rate, "generator_learning_rate")
        self.discriminator_learning_rate = _number(
            discriminator_learning_rate, "discriminator_learning_rate"
        )
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise DataError(f"betas must be two numbers in [0, 1), got {betas}")
        self.betas = betas
        if ema is not None and not (isinstance(ema, (int, float)) and 0.0 < ema < 1.0):
            raise DataError(f"ema must be None or a decay in (0, 1), got {ema!r}")
        self.ema = None if ema is None else float(ema)
        self.divergence_threshold = _number(divergence_threshold, "divergence_threshold")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if self.batch_size % self.pack:
            raise DataError(f"pack={pack} does not divide batch_size={batch_size}")
        self.seed = seed
        self.event_shape = torch.Size([self.length])
        with seeded_initialisation(seed):
            self.generator = WaveGenerator(self.latent_dim, self.length, self.width, n_layers)
            self.discriminator = WaveDiscriminator(
                self.length, self.width, n_layers, self.pack, self.phase_shuffle
            )
        if self.ema is not None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self._diagnostics = Diagnostics()
        self.eval()

    def log_prob(self, x: Any) -> Tensor:
        """A WaveGAN has no density: always raises `NoDensityError`."""
        raise NoDensityError(
            "WaveGAN has no density (log_prob_kind 'none'): judge it by its samples, e.g. "
            "probgen.metrics (MMD, Frechet distance) on spectral features, or use "
            "probgen.WaveNet for an exact likelihood of mu-law waveforms"
        )

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | torch.Generator | None = None) -> Tensor:
        """Draw `n` waveforms (n, length) in [-1, 1]: G(z) with z ~ N(0, I)."""
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        z = torch.randn(
            n,
            self.latent_dim,
            generator=self.make_generator(seed),
            device=self.device,
            dtype=self.dtype,
        )
        net = self.generator_ema if self.ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z)
        finally:
            net.train(was_training)

    def fit(self, data: Any, **options: Any) -> WaveGAN:
        """Fit adversarially through the shared loop (a discriminator step, then a generator one).

        Args:
            data: waveforms (n, length) with values in [-1, 1].
            **options: `fit_model` settings: n_epochs, batch_size, seed, lr_schedule,
                grad_clip, checkpoint_dir, checkpoint_every, resume, progress, max_steps.

        Returns:
            self, with `history_` (per epoch both losses, gradient norms, `max_abs_score` and
            `critic_gap` / `gradient_penalty` or `discriminator_accuracy`).

        Raises:
            DataError: malformed data or options.
            FitError: the fit diverged; the parameters of the last good epoch are kept.
        """
        unknown = sorted(set(options) - set(_FIT_OPTIONS))
        if unknown:
            raise DataError(
                f"WaveGAN.fit got unknown options {unknown}; it takes {', '.join(_FIT_OPTIONS)}"
            )
        settings = {"n_epochs": self.n_epochs, "batch_size": self.batch_size, "seed": self.seed}
        settings.update(options)
        if check_positive_int(settings["batch_size"], "batch_size") % self.pack:
            raise DataError(f"pack={self.pack} does not divide batch_size={settings['batch_size']}")
        x = self._check_data(data, "data")
        self.history_ = fit_adversarial(self, x, _discriminator_step, _generator_step, **settings)
        self.n_iter_ = len(self.history_)
        self._mark_fitted()
        return self

    def _check_data(self, data: Any, name: str) -> Tensor:
        x = as_tensor(data, name, event_shape=(self.length,), min_value=-1.0, max_value=1.0)
        if x.dim() != 2:
            raise DataError(f"{name} must have shape (n, {self.length}), got {tuple(x.shape)}")
        if x.shape[0] < self.pack:
            raise DataError(f"pack={self.pack} is larger than the {x.shape[0]} waveforms of {name}")
        return x.to(device=self.device, dtype=self.dtype)

    def _packed(self, waves: Tensor) -> Tensor:
        """(n, length) -> (n // pack, pack, length) discriminator inputs."""
        return pack_samples(waves[:, None, :], self.pack)

    def _draw(self, n: int) -> Tensor:
        return self.generator(torch.randn(n, self.latent_dim, device=self.device, dtype=self.dtype))


def _batch(gan: WaveGAN, batch: Any) -> Tensor:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x[: x.shape[0] // gan.pack * gan.pack]


def _discriminator_step(gan: WaveGAN, batch: Any) -> Tensor:
    x = _batch(gan, batch)
    n = x.shape[0]
    with torch.no_grad():
        fake = gan._draw(n)
    real_packed, fake_packed = gan._packed(x), gan._packed(fake)
    scores = gan.discriminator(torch.cat([real_packed, fake_packed]))
    if n == 0:  # a last minibatch smaller than `pack`: nothing to judge
        return scores.sum()
    real_scores, fake_scores = scores[: n // gan.pack], scores[n // gan.pack :]
    loss = discriminator_loss(real_scores, fake_scores, gan.loss)
    figures: dict[str, Tensor] = {}
    if gan.loss == "wgan_gp":
        # The critic's output has a free offset: judge its spread, not its level.
        figures["max_abs_score"] = check_scores(
            scores - scores.detach().mean(), gan.divergence_threshold, "critic scores"
        )
        penalty = gradient_penalty(gan.discriminator, real_packed, fake_packed)
        loss = loss + gan.gp_weight * penalty
        figures["critic_gap"] = real_scores.detach().mean() - fake_scores.detach().mean()
        figures["gradient_penalty"] = penalty.detach()
    else:
        figures["max_abs_score"] = check_scores(scores, gan.divergence_threshold)
        correct = torch.cat([real_scores.detach() > 0, fake_scores.detach() < 0])
        figures["discriminator_accuracy"] = correct.float().mean()
    gan._diagnostics.add(**figures)
    return loss


def _generator_step(gan: WaveGAN, batch: Any) -> Tensor:
    n = _batch(gan, batch).shape[0]
    fake = gan._draw(n)
    discriminator = gan.discriminator
    # No gradient for the discriminator's weights in the generator's step.
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.requires_grad_(False)
    try:
        scores = discriminator(gan._packed(fake))
    finally:
        for p, flag in zip(discriminator.parameters(), flags):
            p.requires_grad_(flag)
    if n == 0:
        return fake.sum()
    return generator_loss(scores, gan.loss)


def _number(value: Any, name: str, minimum: float | None = None) -> float:
    valid = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not valid or (value < minimum if minimum is not None else value <= 0):
        bound = f"at least {minimum:g}" if minimum is not None else "positive"
        raise DataError(f"{name} must be a finite number, {bound}, got {value!r}")
    return float(value)
