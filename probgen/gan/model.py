"""Generative adversarial networks under the density contract: `GAN`.

A GAN has no density: `log_prob_kind` is ``"none"`` and `log_prob` raises `NoDensityError`
pointing at sample-based evaluation (`probgen.evaluate`, `probgen.metrics`). It is fitted by
the shared gradient loop with two steps and two optimisers: the discriminator (critic) step,
repeated `n_critic` times per minibatch, then the generator step, each with its own learning
rate. Options: the non-saturating, hinge and WGAN-GP losses (`probgen.gan.losses`), PacGAN
packing (`pack=m`: the discriminator judges m samples jointly), the R1 penalty on real data
(`r1_weight`), a spectrally normalised discriminator (`spectral_norm`), class-conditional
generation (`n_classes`, `sample(n, labels=...)`), an exponential moving average of the generator's
weights (`ema=decay`) and a divergence test (`divergence_threshold`; see
`probgen.gan.stability`). The generator is also a Pyro program (`GAN.model`).

Example:
    >>> import torch
    >>> from probgen.gan.model import GAN
    >>> x = torch.randn(64, 2)
    >>> gan = GAN(2, latent_dim=2, hidden_dims=(16,), pack=2, n_epochs=2, batch_size=16, seed=0)
    >>> gan.fit(x).sample(3, seed=0).shape
    torch.Size([3, 2])
    >>> sorted(gan.history_[0]["losses"])
    ['discriminator', 'generator']
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
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
    r1_penalty,
)
from probgen.gan.networks import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
)
from probgen.gan.stability import Diagnostics, check_scores, fit_adversarial

__all__ = ["GAN"]

_ARCHITECTURES = ("mlp", "dcgan")
_SCHEDULES = ("cosine", "exponential", "plateau")
# `fit` options passed on to `fit_model` (the rest are constructor settings).
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


class GAN(Model):
    """A generative adversarial network for vectors (MLP) or images (DCGAN).

    Args:
        data_shape: shape of one example: ``(d,)`` (or any shape, flattened) for
            ``architecture="mlp"``, ``(C, H, W)`` with values in [0, 1] for ``"dcgan"``.
        architecture: "mlp" or "dcgan" (`probgen.gan.networks`).
        latent_dim: dimension of the standard normal latent z.
        hidden_dims: hidden layer sizes of both MLPs.
        width: channels of the DCGAN discriminator's first layer (and the generator's last).
        loss: "non_saturating", "hinge" or "wgan_gp".
        gp_weight: weight of WGAN-GP's gradient penalty (loss "wgan_gp" only).
        n_critic: discriminator steps per generator step.
        r1_weight: weight gamma of the R1 penalty ``gamma / 2 * E ||grad_x D(x_real)||^2`` on
            the real (packed) inputs (Mescheder et al. 2018), with any loss; 0 for none.
        spectral_norm: divide each discriminator weight by its largest singular value
            (Miyato et al. 2018; `probgen.gan.networks`).
        pack: PacGAN's packing degree m: the discriminator scores m samples jointly; it must
            divide `batch_size`.
        n_classes: number of classes for a class-conditional GAN (labels are then required by
            `fit` and `sample`); None for an unconditional one.
        generator_learning_rate, discriminator_learning_rate: Adam's learning rates.
        betas: Adam's (beta1, beta2) for both optimisers.
        ema: decay of an exponential moving average of the generator's weights, used by
            `sample` and `model` when set (e.g. 0.999); None for none.
        divergence_threshold: a discriminator score (a WGAN critic's, centred) beyond this
            magnitude stops the fit with `FitError`, keeping the last good parameters.
        n_epochs, batch_size: training settings (overridable in `fit`).
        lr_schedule: None, "cosine", "exponential" (to a tenth at the last epoch) or
            "plateau": both learning rates' schedule over the epochs (overridable in `fit`).
        seed: seed of the initial weights and of training; None draws fresh randomness.

    Example:
        >>> import torch
        >>> images = torch.rand(32, 1, 8, 8)
        >>> gan = GAN((1, 8, 8), architecture="dcgan", latent_dim=8, width=8, n_classes=2,
        ...           loss="hinge", n_epochs=1, batch_size=16, seed=0)
        >>> gan.fit(images, labels=torch.arange(32) % 2).sample(4, labels=1, seed=0).shape
        torch.Size([4, 1, 8, 8])
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        data_shape: int | tuple[int, ...] | list[int],
        *,
        architecture: str = "mlp",
        latent_dim: int = 16,
        hidden_dims: tuple[int, ...] | list[int] = (256, 256, 256),
        width: int = 64,
        loss: str = "non_saturating",
        gp_weight: float = 10.0,
        n_critic: int = 1,
        r1_weight: float = 0.0,
        spectral_norm: bool = False,
        pack: int = 1,
        n_classes: int | None = None,
        generator_learning_rate: float = 2e-4,
        discriminator_learning_rate: float = 2e-4,
        betas: tuple[float, float] | list[float] = (0.5, 0.999),
        ema: float | None = None,
        divergence_threshold: float = 1e4,
        n_epochs: int = 20,
        batch_size: int = 64,
        lr_schedule: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(data_shape, int):
            data_shape = (data_shape,)
        self.data_shape = tuple(
            check_positive_int(d, f"data_shape[{i}]") for i, d in enumerate(data_shape)
        )
        if not self.data_shape:
            raise DataError("data_shape must have at least one dimension")
        self.architecture = check_choice(architecture, "architecture", _ARCHITECTURES)
        if self.architecture == "dcgan" and len(self.data_shape) != 3:
            raise DataError(
                f"architecture='dcgan' needs data_shape (C, H, W), got {self.data_shape}"
            )
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden_dims = tuple(
            check_positive_int(d, f"hidden_dims[{i}]") for i, d in enumerate(hidden_dims)
        )
        self.width = check_positive_int(width, "width")
        self.loss = check_choice(loss, "loss", LOSSES)
        self.gp_weight = _non_negative(gp_weight, "gp_weight")
        self.n_critic = check_positive_int(n_critic, "n_critic")
        self.r1_weight = _non_negative(r1_weight, "r1_weight")
        if not isinstance(spectral_norm, bool):
            raise DataError(f"spectral_norm must be True or False, got {spectral_norm!r}")
        self.spectral_norm = spectral_norm
        self.pack = check_positive_int(pack, "pack")
        self.n_classes = None if n_classes is None else check_positive_int(n_classes, "n_classes")
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
        self.batch_size = _check_pack(check_positive_int(batch_size, "batch_size"), self.pack)
        self.lr_schedule = (
            None if lr_schedule is None else check_choice(lr_schedule, "lr_schedule", _SCHEDULES)
        )
        self.seed = seed
        self.event_shape = torch.Size(self.data_shape)

        flat = math.prod(self.data_shape)
        with seeded_initialisation(seed):
            if self.architecture == "mlp":
                self.generator: nn.Module = MLPGenerator(
                    self.latent_dim, flat, self.hidden_dims, self.n_classes
                )
                self.discriminator: nn.Module = MLPDiscriminator(
                    flat, self.hidden_dims, self.pack, self.n_classes, self.spectral_norm
                )
            else:
                shape = self.data_shape
                self.generator = DCGANGenerator(self.latent_dim, shape, self.width, self.n_classes)
                self.discriminator = DCGANDiscriminator(
                    shape, self.width, self.pack, self.n_classes, self.spectral_norm
                )
        if self.ema is not None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self._diagnostics = Diagnostics()
        self.eval()

    # ---- the contract ----------------------------------------------------------------------
    def log_prob(self, x: Any) -> Tensor:
        """A GAN has no density: always raises `NoDensityError`."""
        raise NoDensityError(
            "GAN has no density (log_prob_kind 'none'): judge it by its samples with "
            "probgen.evaluate(model, data) or the sample metrics of probgen.metrics "
            "(Frechet distance, MMD, precision/recall, mode coverage)"
        )

    def _sampler(self) -> nn.Module:
        return self.generator_ema if self.ema is not None else self.generator

    def _latent_prior(self, n: int) -> dist.Distribution:
        zeros = torch.zeros((), device=self.device, dtype=self.dtype)
        return dist.Normal(zeros, zeros + 1.0).expand([n, self.latent_dim]).to_event(1)

    def _generate(self, net: nn.Module, z: Tensor, labels: Tensor | None) -> Tensor:
        return net(z, labels).reshape(-1, *self.data_shape)

    @torch.no_grad()
    def sample(self, n: int, labels: Any = None, *, seed: int | None = None) -> Tensor:
        """Draw `n` examples ``(n, *data_shape)``: ``G(z)`` with ``z ~ N(0, I)``.

        Args:
            n: number of examples.
            labels: class labels (n,) or one label for all, for a conditional GAN.
            seed: seed of the latent draws.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        codes = self._check_labels(labels, n, "labels")
        z = torch.randn(
            n, self.latent_dim, generator=self.make_generator(seed), device=self.device,
            dtype=self.dtype,
        )
        net = self._sampler()
        was_training = net.training
        net.eval()
        try:
            return self._generate(net, z, codes)
        finally:
            net.train(was_training)

    def model(self, n: int = 1, labels: Any = None) -> Tensor:
        """The generator as a Pyro program: ``z ~ N(0, I)`` (site "z"), ``x = G(z)`` (site "x").

        Under `pyro.poutine.trace` the latent and the output are recorded; with the global
        torch seed set to s it returns what ``sample(n, labels, seed=s)`` returns.
        """
        self.check_fitted("model")
        n = check_positive_int(n, "n")
        codes = self._check_labels(labels, n, "labels")
        net = self._sampler()
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", self._latent_prior(n))
            return pyro.deterministic(
                "x", self._generate(net, z, codes), event_dim=len(self.data_shape)
            )

    # ---- input checking --------------------------------------------------------------------
    def _check_x(self, data: Any, name: str) -> Tensor:
        x = as_tensor(data, name, event_shape=self.data_shape)
        if x.dim() != len(self.data_shape) + 1:
            raise DataError(
                f"{name} has shape {tuple(x.shape)}; give a batch of shape "
                f"(n, {', '.join(map(str, self.data_shape))})".replace(", )", ")")
            )
        if self.architecture == "dcgan" and x.numel() and not bool(
            ((x >= 0) & (x <= 1)).all()
        ):
            raise DataError(
                f"{name} must hold images with values in [0, 1] for architecture='dcgan' (the "
                f"generator ends in a sigmoid); got values in [{float(x.min()):.3g}, "
                f"{float(x.max()):.3g}]: divide 8-bit images by 255"
            )
        return x.to(device=self.device, dtype=self.dtype)

    def _check_labels(self, labels: Any, n: int, name: str) -> Tensor | None:
        if self.n_classes is None:
            if labels is not None:
                raise DataError(f"{name} given, but the GAN has no n_classes (not conditional)")
            return None
        if labels is None:
            raise DataError(f"{name} are required: the GAN is conditional (n_classes set)")
        codes = as_tensor(labels, name, integer=True, min_value=0, max_value=self.n_classes - 1)
        codes = codes.reshape(-1).long()
        if codes.numel() == 1 and n > 1:
            codes = codes.expand(n)
        if codes.numel() != n:
            raise DataError(f"{name} has {codes.numel()} entries for {n} examples")
        return codes.to(self.device)

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, labels: Any = None, **options: Any) -> GAN:
        """Fit the generator and discriminator adversarially through the shared loop.

        Args:
            data: examples ``(n, *data_shape)``, or a tuple ``(x, labels)``.
            labels: class labels (n,) in 0..n_classes-1, for a conditional GAN.
            **options: `fit_model` settings: n_epochs, batch_size, seed (override the
                model's), lr_schedule, grad_clip, checkpoint_dir, checkpoint_every, resume,
                progress, max_steps.

        Returns:
            self, with `history_`: per epoch both losses (`losses`), both gradient norms
            (`grad_norms`), `discriminator_accuracy` (or `critic_gap` and `gradient_penalty`
            for WGAN-GP), `max_abs_score` and, with `r1_weight`, `r1_penalty`.

        Raises:
            DataError: malformed data, labels or options.
            FitError: the fit diverged (NaN or an exploding discriminator); the model keeps
                the parameters of the last good epoch.
        """
        if isinstance(data, tuple) and len(data) == 2 and labels is None:
            data, labels = data
        unknown = sorted(set(options) - set(_FIT_OPTIONS))
        if unknown:
            raise DataError(
                f"GAN.fit got unknown options {unknown}; it takes {', '.join(_FIT_OPTIONS)} "
                "(the learning rates, loss and pack are constructor settings)"
            )
        settings = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "lr_schedule": self.lr_schedule,
        }
        settings.update(options)
        _check_pack(check_positive_int(settings["batch_size"], "batch_size"), self.pack)
        x = self._check_x(data, "data")
        if x.shape[0] < self.pack:
            raise DataError(f"pack={self.pack} is larger than the {x.shape[0]} examples of data")
        codes = self._check_labels(labels, x.shape[0], "labels")
        history = fit_adversarial(
            self,
            (x,) if codes is None else (x, codes),
            _discriminator_step,
            _generator_step,
            **settings,
        )
        self.history_ = history
        self.n_iter_ = len(history)
        self._mark_fitted()
        return self

    def _batch(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        """A minibatch's examples and labels, cut to a multiple of `pack`."""
        parts = batch if isinstance(batch, (tuple, list)) else (batch,)
        keep = parts[0].shape[0] // self.pack * self.pack
        x = parts[0][:keep].reshape(keep, -1) if self.architecture == "mlp" else parts[0][:keep]
        codes = parts[1][:keep] if len(parts) > 1 else None
        return x, codes

    def _draw(self, n: int, codes: Tensor | None) -> Tensor:
        z = torch.randn(n, self.latent_dim, device=self.device, dtype=self.dtype)
        fake = self.generator(z, codes)
        return fake.reshape(n, -1) if self.architecture == "mlp" else fake

    def _packed_critic(self, codes: Tensor | None) -> Any:
        """Scores of packed inputs, each of whose samples has the label in `codes`.

        Labels are added inside, so that a gradient penalty sees the data only.
        """
        discriminator = self.discriminator
        pack = self.pack

        def critic(packed: Tensor) -> Tensor:
            n = packed.shape[0] * pack
            x = packed.reshape(n, -1) if packed.dim() == 2 else packed.reshape(
                n, packed.shape[1] // pack, *packed.shape[2:]
            )
            return discriminator(pack_samples(discriminator.condition(x, codes), pack))

        return critic


def _discriminator_step(gan: GAN, batch: Any) -> Tensor:
    x, codes = gan._batch(batch)
    n = x.shape[0]
    with torch.no_grad():
        fake = gan._draw(n, codes)
    real_packed, fake_packed = pack_samples(x, gan.pack), pack_samples(fake, gan.pack)
    both = None if codes is None else torch.cat([codes, codes])
    # One pass over real and fake (the discriminator has no batch norm to mix them).
    scores = gan._packed_critic(both)(torch.cat([real_packed, fake_packed]))
    real_scores, fake_scores = scores[: n // gan.pack], scores[n // gan.pack :]
    if n == 0:  # a last minibatch smaller than `pack`: nothing to judge
        return scores.sum()
    loss = discriminator_loss(real_scores, fake_scores, gan.loss)
    figures: dict[str, Tensor] = {}
    if gan.loss == "wgan_gp":
        # The critic's output has a free offset: judge its spread, not its level.
        figures["max_abs_score"] = check_scores(
            scores - scores.detach().mean(), gan.divergence_threshold, "critic scores"
        )
        penalty = gradient_penalty(gan._packed_critic(codes), real_packed, fake_packed)
        loss = loss + gan.gp_weight * penalty
        figures["critic_gap"] = real_scores.detach().mean() - fake_scores.detach().mean()
        figures["gradient_penalty"] = penalty.detach()
    else:
        figures["max_abs_score"] = check_scores(scores, gan.divergence_threshold)
        correct = torch.cat([real_scores.detach() > 0, fake_scores.detach() < 0])
        figures["discriminator_accuracy"] = correct.float().mean()
    if gan.r1_weight > 0:
        r1 = r1_penalty(gan._packed_critic(codes), real_packed)
        loss = loss + 0.5 * gan.r1_weight * r1
        figures["r1_penalty"] = r1.detach()
    gan._diagnostics.add(**figures)
    return loss


def _generator_step(gan: GAN, batch: Any) -> Tensor:
    x, codes = gan._batch(batch)
    n = x.shape[0]
    fake = gan._draw(n, codes)
    discriminator = gan.discriminator
    # The generator's loss needs no gradient for the discriminator's weights: leaving them out
    # of the graph saves a third of the backward pass.
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.requires_grad_(False)
    try:
        packed = pack_samples(discriminator.condition(fake, codes), gan.pack)
        scores = discriminator(packed)
    finally:
        for p, flag in zip(discriminator.parameters(), flags):
            p.requires_grad_(flag)
    if n == 0:
        return fake.sum()
    return generator_loss(scores, gan.loss)


def _check_pack(batch_size: int, pack: int) -> int:
    if batch_size % pack != 0:
        raise DataError(
            f"pack={pack} does not divide batch_size={batch_size}: the discriminator judges "
            f"groups of {pack} samples; choose a batch_size that is a multiple of pack"
        )
    return batch_size


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        value > 0 and math.isfinite(value)
    ):
        raise DataError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        value >= 0 and math.isfinite(value)
    ):
        raise DataError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)
