"""VAE-GAN (Larsen et al. 2016): a VAE whose reconstructions are judged in a discriminator's
feature space, trained together with a GAN loss on reconstructed and prior-sampled examples.

With x_tilde = Dec(z), z ~ q(z | x) = N(loc(x), diag(scale(x)^2)), x_p = Dec(z_p),
z_p ~ N(0, I), and f(.) the activations of the discriminator's l-th hidden layer, the terms are

* ``kl``: KL(q(z | x) || N(0, I)), in closed form;
* ``feature_reconstruction``: ``-log N(f(x) | f(x_tilde), I)`` up to its constant, i.e.
  ``0.5 * ||f(x) - f(x_tilde)||^2`` (a learned similarity in place of a pixel likelihood);
* ``gan``: the adversarial loss (`probgen.gan.losses`) of real x against both x_tilde and x_p.

Three parameter groups, each with its own optimiser and its own `Step` of the shared loop
(`probgen.fitting.loop.fit_model`), run in turn on each minibatch:

* ``encoder`` minimises ``kl_weight * kl + feature_reconstruction`` (``kl_weight`` is 1 in
  the paper);
* ``decoder`` minimises ``gamma * feature_reconstruction + generator_loss`` (the
  non-saturating or hinge form of "minus the GAN loss" on x_tilde and x_p together);
* ``discriminator`` minimises the discriminator loss of x against x_tilde and x_p together
  (the two kinds of fake weigh as much as the real images, as in a plain GAN; the paper's sum
  of three terms counts the fakes twice over).

As in Algorithm 1 of the paper all three terms are computed from one draw per minibatch: the
encoder step's z is reused (detached) by the decoder step, and the decoder step's x_tilde and
x_p (detached) by the discriminator step. Batch-norm running statistics are buffers, updated by
every forward pass in training mode, not parameters of any step.

The feature term is a sum over the layer's k features, so its size grows with k: settings of
``gamma`` and ``kl_weight`` carry over between image sizes roughly in proportion to 1/k.

**Density.** None: ``log_prob_kind`` is ``"none"``. The decoder is deterministic (no pixel noise
model) and the reconstruction term is a Gaussian on features that the discriminator keeps
changing, not a normalised model of x, so no bound on log p(x) follows from it; `log_prob`
raises `NoDensityError` pointing at the sample metrics (`probgen.evaluate`, FID/KID,
precision/recall), at `reconstruct`, and at `probgen.VAE` for a likelihood bound.

Example:
    >>> import torch
    >>> from probgen.gan.vaegan import VAEGAN
    >>> x = torch.randn(64, 2)
    >>> model = VAEGAN(2, latent_dim=2, hidden_dims=(8,), n_epochs=2, batch_size=16, seed=0)
    >>> model.fit(x).sample(3, seed=0).shape
    torch.Size([3, 2])
    >>> sorted(model.history_[0]["losses"])
    ['decoder', 'discriminator', 'encoder']
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError, NoDensityError
from probgen.fitting.loop import fit_model
from probgen.fitting.optimizers import Step
from probgen.gan._images import check_images
from probgen.gan.losses import discriminator_loss, generator_loss
from probgen.gan.model import _FIT_OPTIONS, _non_negative, _positive
from probgen.gan.networks import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
)
from probgen.gan.stability import Diagnostics, check_scores
from probgen.gan.vaegan_networks import (
    ConvEncoder,
    MLPEncoder,
    discriminator_features,
    discriminator_layers,
    feature_reconstruction,
    gaussian_kl,
)

__all__ = ["VAEGAN", "VAEGAN_LOSSES"]

_ARCHITECTURES = ("mlp", "dcgan")
# WGAN-GP is left out: a critic's features have a free scale, which the feature
# reconstruction term would chase.
VAEGAN_LOSSES = ("non_saturating", "hinge")
_STEPS = ("encoder", "decoder", "discriminator")


class VAEGAN(Model):
    """A VAE-GAN for vectors (MLP networks) or images (DCGAN networks).

    Args:
        data_shape: shape of one example: ``(d,)`` (or any shape, flattened) for
            ``architecture="mlp"``, ``(C, H, W)`` with values in [0, 1] for ``"dcgan"``.
        architecture: "mlp" or "dcgan".
        latent_dim: dimension of z.
        hidden_dims: hidden layer sizes of the three MLPs.
        width: channels of the encoder's and discriminator's first layer (and the decoder's
            last) for "dcgan".
        feature_layer: which hidden layer of the discriminator (1 = first) measures the
            reconstructions; None for its last hidden layer.
        gamma: weight of the feature reconstruction against the GAN loss in the decoder's
            objective (the paper's gamma); on 8x8 digits with 256 features 0.1-0.3 did best.
        kl_weight: weight of the KL term in the encoder's objective (1 in the paper; below 1
            the encoder keeps more of x when the discriminator's features are still small,
            as beta-VAE's beta).
        loss: adversarial loss: "non_saturating" or "hinge".
        encoder_learning_rate, decoder_learning_rate, discriminator_learning_rate: Adam's
            learning rates of the three steps.
        betas: Adam's (beta1, beta2) for the three optimisers.
        divergence_threshold: a discriminator score beyond this magnitude stops the fit with
            `FitError`, keeping the last good parameters.
        n_epochs, batch_size: training settings (overridable in `fit`).
        seed: seed of the initial weights and of training; None draws fresh randomness.

    Example:
        >>> import torch
        >>> model = VAEGAN((1, 8, 8), architecture="dcgan", latent_dim=4, width=4,
        ...                n_epochs=1, batch_size=16, seed=0).fit(torch.rand(32, 1, 8, 8))
        >>> model.reconstruct(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "n_iter_")

    def __init__(
        self,
        data_shape: int | tuple[int, ...] | list[int],
        *,
        architecture: str = "mlp",
        latent_dim: int = 16,
        hidden_dims: tuple[int, ...] | list[int] = (256, 256),
        width: int = 32,
        feature_layer: int | None = None,
        gamma: float = 0.1,
        kl_weight: float = 1.0,
        loss: str = "non_saturating",
        encoder_learning_rate: float = 2e-4,
        decoder_learning_rate: float = 2e-4,
        discriminator_learning_rate: float = 2e-4,
        betas: tuple[float, float] | list[float] = (0.5, 0.999),
        divergence_threshold: float = 1e4,
        n_epochs: int = 20,
        batch_size: int = 64,
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
        if self.architecture == "mlp" and not self.hidden_dims:
            raise DataError(
                "hidden_dims must hold at least one size: the reconstruction is measured on "
                "a hidden layer of the discriminator"
            )
        self.width = check_positive_int(width, "width")
        self.gamma = _non_negative(gamma, "gamma")
        self.kl_weight = _non_negative(kl_weight, "kl_weight")
        self.loss = check_choice(loss, "loss", VAEGAN_LOSSES)
        self.encoder_learning_rate = _positive(encoder_learning_rate, "encoder_learning_rate")
        self.decoder_learning_rate = _positive(decoder_learning_rate, "decoder_learning_rate")
        self.discriminator_learning_rate = _positive(
            discriminator_learning_rate, "discriminator_learning_rate"
        )
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise DataError(f"betas must be two numbers in [0, 1), got {betas}")
        self.betas = betas
        self.divergence_threshold = _positive(divergence_threshold, "divergence_threshold")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = seed
        self.event_shape = torch.Size(self.data_shape)

        flat = math.prod(self.data_shape)
        with seeded_initialisation(seed):
            if self.architecture == "mlp":
                self.encoder: nn.Module = MLPEncoder(flat, self.latent_dim, self.hidden_dims)
                self.decoder: nn.Module = MLPGenerator(
                    self.latent_dim, flat, tuple(reversed(self.hidden_dims))
                )
                self.discriminator: nn.Module = MLPDiscriminator(flat, self.hidden_dims)
            else:
                shape = self.data_shape
                self.encoder = ConvEncoder(shape, self.latent_dim, self.width)  # type: ignore[arg-type]
                self.decoder = DCGANGenerator(self.latent_dim, shape, self.width)  # type: ignore[arg-type]
                self.discriminator = DCGANDiscriminator(shape, self.width)  # type: ignore[arg-type]
        n_layers = discriminator_layers(self.discriminator)
        if feature_layer is not None:
            feature_layer = check_positive_int(feature_layer, "feature_layer")
            if feature_layer > n_layers:
                raise DataError(
                    f"feature_layer must be in 1..{n_layers} (the discriminator's hidden "
                    f"layers), got {feature_layer}"
                )
        self.feature_layer = feature_layer
        # Per-minibatch values shared between the steps (see the module docstring).
        self._encoded: tuple[Any, Tensor, Tensor] | None = None
        self._decoded: tuple[Any, Tensor] | None = None
        self._diagnostics = Diagnostics()
        self.eval()

    @property
    def layer(self) -> int:
        """The discriminator's hidden layer (1-based) whose features measure reconstructions."""
        if self.feature_layer is not None:
            return self.feature_layer
        return discriminator_layers(self.discriminator)

    # ---- the contract ----------------------------------------------------------------------
    def log_prob(self, x: Any) -> Tensor:
        """A VAE-GAN has no density: always raises `NoDensityError`."""
        raise NoDensityError(
            "VAEGAN has no density (log_prob_kind 'none'): its reconstruction term is a "
            "Gaussian on discriminator features, not a normalised likelihood of x, so no bound "
            "on log p(x) follows. Judge it by its samples with probgen.evaluate(model, data) or "
            "probgen.metrics (FID/KID on classifier features, precision/recall, coverage), its "
            "reconstructions with reconstruct(x); for a likelihood bound fit probgen.VAE"
        )

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None) -> Tensor:
        """Draw `n` examples ``(n, *data_shape)``: ``Dec(z)`` with ``z ~ N(0, I)``.

        Args:
            n: number of examples.
            seed: seed of the latent draws.
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        z = torch.randn(
            n, self.latent_dim, generator=self.make_generator(seed), device=self.device,
            dtype=self.dtype,
        )
        return self.decode(z)

    @torch.no_grad()
    def encode(self, x: Any) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(z | x), each ``(n, latent_dim)``.

        Args:
            x: examples ``(n, *data_shape)`` (images may also be flat rows).
        """
        self.check_fitted("encode")
        with self._evaluating():
            return self.encoder(self._check_x(x, "x"))

    @torch.no_grad()
    def decode(self, z: Any) -> Tensor:
        """The decoder's output ``(n, *data_shape)`` for latent codes ``z (n, latent_dim)``."""
        self.check_fitted("decode")
        codes = as_tensor(z, "z", event_shape=(self.latent_dim,))
        codes = codes.reshape(-1, self.latent_dim).to(device=self.device, dtype=self.dtype)
        with self._evaluating():
            return self.decoder(codes).reshape(-1, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x: Any) -> Tensor:
        """``Dec(mean of q(z | x))``, shaped ``(n, *data_shape)``."""
        loc, _ = self.encode(x)
        return self.decode(loc)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Evaluation mode (batch norm on its running statistics) inside, the old mode after."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # ---- the objective -------------------------------------------------------------------
    def losses(self, x: Any, *, seed: int | None = None) -> dict[str, Tensor]:
        """The objective's terms on examples `x`, each a differentiable scalar (batch mean).

        The reparameterisation noise eps (n, latent_dim) and then the prior codes z_p
        (n, latent_dim) are drawn, in that order, from ``make_generator(seed)``; the networks
        run in their current mode (training or evaluation).

        Returns:
            ``kl``, ``feature_reconstruction``, ``gan`` (the discriminator's loss), and the
            three steps' objectives ``encoder``, ``decoder``, ``discriminator``.
        """
        data = self._flat(self._check_x(x, "x"))
        generator = self.make_generator(seed)
        n = data.shape[0]
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.device,
                          dtype=self.dtype)
        z_prior = torch.randn(n, self.latent_dim, generator=generator, device=self.device,
                              dtype=self.dtype)
        loc, scale = self.encoder(data)
        kl = gaussian_kl(loc, scale).mean()
        fakes = self._flat(self.decoder(torch.cat([loc + scale * eps, z_prior])))
        features, scores = discriminator_features(
            self.discriminator, torch.cat([data, fakes]), self.layer
        )
        real_features, fake_features = features[:n], features[n : 2 * n]
        reconstruction = feature_reconstruction(real_features, fake_features).mean()
        fake_scores = scores[n:]
        adversarial = discriminator_loss(scores[:n], fake_scores, self.loss)
        return {
            "kl": kl,
            "feature_reconstruction": reconstruction,
            "gan": adversarial,
            "encoder": self.kl_weight * kl + reconstruction,
            "decoder": self.gamma * reconstruction + generator_loss(fake_scores, self.loss),
            "discriminator": adversarial,
        }

    def _codes(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Posterior and prior codes (2n, latent_dim) of a minibatch (no gradient)."""
        with torch.no_grad():
            loc, scale = self.encoder(self._flat(_first(batch)))
            z = loc + scale * torch.randn_like(loc)
        return z, torch.randn_like(z)

    def _encoder_loss(self, batch: Any) -> Tensor:
        x = self._flat(_first(batch))
        n = x.shape[0]
        loc, scale = self.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        z_prior = torch.randn_like(z)
        kl = gaussian_kl(loc, scale).mean()
        with _frozen(self.decoder, self.discriminator):
            # The decoder always sees posterior and prior codes together, so that its batch
            # statistics (and running averages) are the same in all three steps.
            fakes = self._flat(self.decoder(torch.cat([z, z_prior])))
            features, _ = discriminator_features(
                self.discriminator, torch.cat([x, fakes[:n]]), self.layer
            )
        reconstruction = feature_reconstruction(features[:n].detach(), features[n:]).mean()
        self._encoded = (batch, z.detach(), z_prior)
        self._diagnostics.add(kl=kl, feature_reconstruction=reconstruction)
        return self.kl_weight * kl + reconstruction

    def _decoder_loss(self, batch: Any) -> Tensor:
        x = self._flat(_first(batch))
        n = x.shape[0]
        cached = self._encoded
        # One draw per minibatch for all three steps (Algorithm 1 of the paper); afresh
        # when the decoder step runs without the encoder step before it.
        z, z_prior = cached[1:] if cached is not None and cached[0] is batch else self._codes(
            batch
        )
        fakes = self._flat(self.decoder(torch.cat([z, z_prior])))
        with _frozen(self.discriminator):
            features, scores = discriminator_features(
                self.discriminator, torch.cat([x, fakes]), self.layer
            )
        reconstruction = feature_reconstruction(features[:n].detach(), features[n : 2 * n])
        self._decoded = (batch, fakes.detach())
        adversarial = generator_loss(scores[n:], self.loss)
        return self.gamma * reconstruction.mean() + adversarial

    def _discriminator_loss(self, batch: Any) -> Tensor:
        x = self._flat(_first(batch))
        n = x.shape[0]
        cached = self._decoded
        if cached is not None and cached[0] is batch:
            fakes = cached[1]
        else:
            with torch.no_grad():
                fakes = self._flat(self.decoder(torch.cat(self._codes(batch))))
        scores = self.discriminator(torch.cat([x, fakes]))
        largest = check_scores(scores, self.divergence_threshold)
        real, fake = scores[:n], scores[n:]
        correct = torch.cat([real.detach() > 0, fake.detach() < 0])
        self._diagnostics.add(
            discriminator_accuracy=correct.float().mean(), max_abs_score=largest
        )
        return discriminator_loss(real, fake, self.loss)

    def _epoch_end(self, model: nn.Module, record: dict) -> None:
        record.update(self._diagnostics.flush())
        self._encoded = self._decoded = None

    def training_steps(self) -> list[Step]:
        """The three `Step`s of the shared loop, in the order they run on each minibatch."""
        rates = {
            "encoder": self.encoder_learning_rate,
            "decoder": self.decoder_learning_rate,
            "discriminator": self.discriminator_learning_rate,
        }
        return [
            Step(
                name,
                _STEP_LOSSES[name],
                parameters=name,
                learning_rate=rates[name],
                betas=self.betas,
            )
            for name in _STEPS
        ]

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, **options: Any) -> VAEGAN:
        """Fit encoder, decoder and discriminator through the shared loop (three steps).

        Args:
            data: examples ``(n, *data_shape)`` (images in [0, 1], also as flat rows).
            **options: `fit_model` settings: n_epochs, batch_size, seed (override the
                model's), lr_schedule, grad_clip, checkpoint_dir, checkpoint_every, resume,
                progress, max_steps.

        Returns:
            self, with `history_`: per epoch the three steps' mean losses (`losses`) and
            gradient norms (`grad_norms`), and the epoch means of ``kl``,
            ``feature_reconstruction``, ``discriminator_accuracy`` and ``max_abs_score``.

        Raises:
            DataError: malformed data or options.
            FitError: the fit diverged (NaN or an exploding discriminator); the model keeps
                the parameters of the last good epoch.
        """
        unknown = sorted(set(options) - set(_FIT_OPTIONS))
        if unknown:
            raise DataError(
                f"VAEGAN.fit got unknown options {unknown}; it takes {', '.join(_FIT_OPTIONS)} "
                "(learning rates, gamma and the loss are constructor settings)"
            )
        settings = {"n_epochs": self.n_epochs, "batch_size": self.batch_size, "seed": self.seed}
        settings.update(options)
        x = self._check_x(data, "data")
        self._diagnostics = Diagnostics()
        try:
            history = fit_model(
                self, x, steps=self.training_steps(), epoch_end=self._epoch_end, **settings
            )
        finally:
            self._encoded = self._decoded = None
            self._diagnostics.flush()
        self.history_ = history
        self.n_iter_ = len(history)
        self._mark_fitted()
        return self

    # ---- input checking --------------------------------------------------------------------
    def _check_x(self, data: Any, name: str) -> Tensor:
        place = {"device": self.device, "dtype": self.dtype}
        if self.architecture == "dcgan":
            return check_images(data, self.data_shape, name, **place)[0]  # type: ignore[arg-type]
        x = as_tensor(data, name, event_shape=self.data_shape)
        if x.dim() != len(self.data_shape) + 1:
            raise DataError(
                f"{name} has shape {tuple(x.shape)}; give a batch of shape "
                f"(n, {', '.join(map(str, self.data_shape))})".replace(", )", ")")
            )
        if x.shape[0] == 0:
            raise DataError(f"{name} holds no examples")
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name} holds NaN or infinite values")
        return x.to(**place)

    def _flat(self, x: Tensor) -> Tensor:
        """Examples as the networks take them: rows for the MLPs, images for DCGAN."""
        return x.reshape(x.shape[0], -1) if self.architecture == "mlp" else x

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["data_shape"] = list(self.data_shape)
        config["hidden_dims"] = list(self.hidden_dims)
        return config


# The steps' losses take the model they are given (not a bound method), so that a Step works
# on any VAEGAN, as `fit_model(model, data, steps=...)` passes it.
_STEP_LOSSES = {
    "encoder": lambda model, batch: model._encoder_loss(batch),
    "decoder": lambda model, batch: model._decoder_loss(batch),
    "discriminator": lambda model, batch: model._discriminator_loss(batch),
}


def _first(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@contextlib.contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """No parameter gradients for modules whose step is not running: the loss still
    back-propagates through them to the step's own parameters, with less work."""
    parameters = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad_(flag)
