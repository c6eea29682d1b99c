"""Unpaired image-to-image translation: `CycleGAN` (Zhu et al. 2017).

Two generators translate between image domains A and B (``G: A -> B``, ``F: B -> A``) and two
PatchGAN discriminators judge each domain. The generators minimise

    adversarial(G, D_B) + adversarial(F, D_A)
    + cycle_weight * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)
    + identity_weight * (|G(b) - b|_1 + |F(a) - a|_1)

(mean absolute errors on the [-1, 1] scale), the discriminators the adversarial loss of their
domain. The cycle terms are what make unpaired training possible: a translation must be
invertible, so it cannot forget which digit it was given. The identity terms (the paper's
colour preservation) only make sense when a domain's images are valid inputs of the other
generator unchanged; set ``identity_weight=0`` when the transform moves every image (as colour
inversion does).

The model has no density (`log_prob_kind` is ``"none"``) and nothing to sample without an
input: `sample` raises `DataError` pointing to `translate`, which maps given images of one
domain to the other. Training runs through `probgen.fitting.loop.fit_model` with two `Step`s
and optimisers (generators first, then the discriminators on the same minibatch's translated
images), so checkpoints, ``resume=True``, seeding and `FitError` on divergence are the shared
loop's.

Example:
    >>> import torch
    >>> from probgen.gan.cyclegan import CycleGAN
    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.rand(16, 1, 8, 8, generator=g)
    >>> model = CycleGAN((1, 8, 8), channels=4, n_blocks=1, discriminator_channels=4,
    ...                  n_epochs=1, batch_size=8, seed=0).fit(a, 1 - a)
    >>> model.translate(a[:3], direction="b_to_a").shape
    torch.Size([3, 1, 8, 8])
    >>> sorted(model.history_[0]["losses"])
    ['discriminators', 'generators']
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError, NoDensityError
from probgen.fitting.loop import fit_model
from probgen.fitting.optimizers import Step
from probgen.gan._images import check_image_shape, check_images, to_signed, to_unit
from probgen.gan.losses import LOSSES, discriminator_loss, generator_loss
from probgen.gan.model import _FIT_OPTIONS, _non_negative, _positive
from probgen.gan.stability import Diagnostics, check_scores
from probgen.gan.translation_networks import PatchDiscriminator, ResnetGenerator

__all__ = ["CycleGAN", "DIRECTIONS", "CYCLEGAN_LOSSES"]

DIRECTIONS = ("a_to_b", "b_to_a")
# "lsgan" (Mao et al. 2017) is the paper's choice; the others are probgen.gan.losses'.
CYCLEGAN_LOSSES = ("lsgan",) + tuple(loss for loss in LOSSES if loss != "wgan_gp")


def _adversarial_d(real: Tensor, fake: Tensor, loss: str) -> Tensor:
    if loss == "lsgan":
        # Halved as in the paper's code, so D learns at half the generators' pace.
        return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())
    return discriminator_loss(real, fake, loss)


def _adversarial_g(fake: Tensor, loss: str) -> Tensor:
    if loss == "lsgan":
        return (fake - 1.0).square().mean()
    return generator_loss(fake, loss)


class CycleGAN(Model):
    """Unpaired translation between two image domains with cycle-consistency.

    Args:
        image_shape: (channels, height, width) of domain A's images.
        image_shape_b: domain B's; None for the same as A (height and width must agree).
        channels: width of the generators' first layer.
        n_blocks: residual blocks in each generator.
        n_downsampling: stride-2 stages in each generator (height and width must divide by
            ``2**n_downsampling``).
        discriminator_channels: width of the discriminators' first layer.
        discriminator_layers: stride-2 layers of each PatchGAN discriminator.
        loss: adversarial loss: "lsgan" (least squares, the paper's), "non_saturating" or
            "hinge".
        cycle_weight: weight of the cycle-consistency (L1) terms (the paper's lambda = 10).
        identity_weight: weight of the identity terms (the paper uses 0.5 * lambda when
            colours must be kept); 0 turns them off, as needed when the channel counts differ.
        generator_learning_rate, discriminator_learning_rate: Adam's learning rates (the
            paper's 2e-4).
        betas: Adam's (beta1, beta2) for both optimisers (the paper's (0.5, 0.999)).
        n_epochs, batch_size: training settings (overridable in `fit`).
        divergence_threshold: a fit stops with `FitError` (keeping the epoch's starting
            parameters) when a discriminator score's magnitude exceeds this.
        seed: seed of the initial weights, the pairing of the unpaired sets and training.

    Example:
        >>> model = CycleGAN((1, 28, 28), channels=8, n_blocks=1, seed=0)
        >>> model.log_prob_kind.value, model.event_shape
        ('none', torch.Size([1, 28, 28]))
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "n_iter_")

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int] = (1, 28, 28),
        image_shape_b: tuple[int, int, int] | list[int] | None = None,
        channels: int = 32,
        n_blocks: int = 3,
        n_downsampling: int = 1,
        discriminator_channels: int = 32,
        discriminator_layers: int = 2,
        loss: str = "lsgan",
        cycle_weight: float = 10.0,
        identity_weight: float = 5.0,
        generator_learning_rate: float = 2e-4,
        discriminator_learning_rate: float = 2e-4,
        betas: tuple[float, float] | list[float] = (0.5, 0.999),
        divergence_threshold: float = 1e4,
        n_epochs: int = 10,
        batch_size: int = 32,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "image_shape")
        self.image_shape_b = (
            self.image_shape
            if image_shape_b is None
            else check_image_shape(image_shape_b, "image_shape_b")
        )
        if self.image_shape[1:] != self.image_shape_b[1:]:
            raise DataError(
                f"image_shape {self.image_shape} and image_shape_b {self.image_shape_b} must "
                "have the same height and width"
            )
        self.channels = check_positive_int(channels, "channels")
        self.n_blocks = check_positive_int(n_blocks, "n_blocks", minimum=0)
        self.n_downsampling = check_positive_int(n_downsampling, "n_downsampling", minimum=0)
        factor = 2**self.n_downsampling
        if self.image_shape[1] % factor or self.image_shape[2] % factor:
            raise DataError(
                f"n_downsampling={self.n_downsampling}: image height and width "
                f"{self.image_shape[1:]} must be divisible by {factor}"
            )
        self.discriminator_channels = check_positive_int(
            discriminator_channels, "discriminator_channels"
        )
        self.discriminator_layers = check_positive_int(
            discriminator_layers, "discriminator_layers"
        )
        if min(self.image_shape[1:]) < 2**self.discriminator_layers:
            raise DataError(
                f"discriminator_layers={self.discriminator_layers} halves the "
                f"{self.image_shape[1:]} images below one pixel; use fewer layers"
            )
        self.loss = check_choice(loss, "loss", CYCLEGAN_LOSSES)
        self.cycle_weight = _non_negative(cycle_weight, "cycle_weight")
        self.identity_weight = _non_negative(identity_weight, "identity_weight")
        if self.identity_weight > 0 and self.image_shape[0] != self.image_shape_b[0]:
            raise DataError(
                "identity_weight > 0 needs the same channel count in both domains "
                f"({self.image_shape[0]} vs {self.image_shape_b[0]}); set identity_weight=0"
            )
        self.generator_learning_rate = _positive(generator_learning_rate, "generator_learning_rate")
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
        self.event_shape = torch.Size(self.image_shape)

        c_a, c_b = self.image_shape[0], self.image_shape_b[0]
        options = dict(
            channels=self.channels, n_blocks=self.n_blocks, n_downsampling=self.n_downsampling
        )
        critic = dict(channels=self.discriminator_channels, n_layers=self.discriminator_layers)
        with seeded_initialisation(seed):
            self.generators = nn.ModuleDict(
                {"a_to_b": ResnetGenerator(c_a, c_b, **options),
                 "b_to_a": ResnetGenerator(c_b, c_a, **options)}
            )
            self.discriminators = nn.ModuleDict(
                {"a": PatchDiscriminator(c_a, **critic), "b": PatchDiscriminator(c_b, **critic)}
            )
        # The generator step's translations, reused (detached) by the discriminator step.
        self._translated: tuple[Any, Tensor, Tensor] | None = None
        self._diagnostics = Diagnostics()
        self.eval()

    # ---- the objective -------------------------------------------------------------------
    def _generator_terms(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Generator objective and its parts on signed images ([-1, 1])."""
        to_b, to_a = self.generators["a_to_b"], self.generators["b_to_a"]
        fake_b, fake_a = to_b(a), to_a(b)
        adversarial = _adversarial_g(self.discriminators["b"](fake_b), self.loss) + _adversarial_g(
            self.discriminators["a"](fake_a), self.loss
        )
        cycle = F.l1_loss(to_a(fake_b), a) + F.l1_loss(to_b(fake_a), b)
        if self.identity_weight > 0:
            identity = F.l1_loss(to_b(b), b) + F.l1_loss(to_a(a), a)
        else:
            identity = a.new_zeros(())
        total = adversarial + self.cycle_weight * cycle + self.identity_weight * identity
        return {
            "generator": total,
            "adversarial": adversarial,
            "cycle": cycle,
            "identity": identity,
            "fake_a": fake_a,
            "fake_b": fake_b,
        }

    def _discriminator_loss(self, a: Tensor, b: Tensor, fake_a: Tensor, fake_b: Tensor) -> Tensor:
        scores = {
            "real_a": self.discriminators["a"](a),
            "fake_a": self.discriminators["a"](fake_a),
            "real_b": self.discriminators["b"](b),
            "fake_b": self.discriminators["b"](fake_b),
        }
        for name, value in scores.items():
            check_scores(value, self.divergence_threshold, f"discriminator scores ({name})")
        loss = _adversarial_d(scores["real_a"], scores["fake_a"], self.loss) + _adversarial_d(
            scores["real_b"], scores["fake_b"], self.loss
        )
        # Least squares aims real patches at 1 and fake ones at 0: its boundary is 0.5.
        boundary = 0.5 if self.loss == "lsgan" else 0.0
        correct = torch.cat(
            [(scores[f"real_{d}"].detach() > boundary).flatten() for d in "ab"]
            + [(scores[f"fake_{d}"].detach() < boundary).flatten() for d in "ab"]
        )
        self._diagnostics.add(discriminator_accuracy=correct.float().mean())
        return loss

    def losses(self, a: Any, b: Any) -> dict[str, Tensor]:
        """The objective's terms on images `a` (domain A) and `b` (domain B), in [0, 1].

        Returns:
            Scalars (differentiable): ``generator`` (the generators' total), its parts
            ``adversarial``, ``cycle`` and ``identity`` (unweighted), and ``discriminator``.
        """
        a_signed = to_signed(check_images(a, self.image_shape, "a", **self._place())[0])
        b_signed = to_signed(check_images(b, self.image_shape_b, "b", **self._place())[0])
        terms = self._generator_terms(a_signed, b_signed)
        fake_a, fake_b = terms.pop("fake_a"), terms.pop("fake_b")
        terms["discriminator"] = self._discriminator_loss(
            a_signed, b_signed, fake_a.detach(), fake_b.detach()
        )
        self._diagnostics.flush()
        return terms

    def _generator_step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        a, b = batch
        # No gradient for the discriminators' weights: a third less backward work.
        self.discriminators.requires_grad_(False)
        try:
            terms = self._generator_terms(a, b)
        finally:
            self.discriminators.requires_grad_(True)
        self._translated = (batch, terms["fake_a"].detach(), terms["fake_b"].detach())
        self._diagnostics.add(
            adversarial_loss=terms["adversarial"],
            cycle_loss=terms["cycle"],
            identity_loss=terms["identity"],
        )
        return terms["generator"]

    def _discriminator_step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        a, b = batch
        cached = self._translated
        if cached is not None and cached[0] is batch:
            fake_a, fake_b = cached[1], cached[2]
        else:  # not after a generator step on this batch: translate afresh
            with torch.no_grad():
                fake_a = self.generators["b_to_a"](b)
                fake_b = self.generators["a_to_b"](a)
        return self._discriminator_loss(a, b, fake_a, fake_b)

    def _epoch_end(self, model: nn.Module, record: dict) -> None:
        record.update(self._diagnostics.flush())
        self._translated = None

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, data_b: Any = None, **options: Any) -> CycleGAN:
        """Fit on unpaired images of the two domains.

        The two sets need not have the same size or any correspondence: the smaller one is
        repeated in a seeded random order to the larger one's size, and each minibatch holds
        as many images of A as of B.

        Args:
            data: domain A's images in [0, 1], (n, C, H, W) or flat (n, C*H*W); or a tuple
                (images_a, images_b).
            data_b: domain B's images (when `data` is not a tuple).
            **options: `fit_model` settings: n_epochs, batch_size, seed (override the
                model's), lr_schedule, grad_clip, checkpoint_dir, checkpoint_every, resume,
                progress, max_steps.

        Returns:
            self, with `history_`: per epoch the loop's figures (``losses`` and
            ``grad_norms`` of the "generators" and "discriminators" steps) and the epoch means
            of ``adversarial_loss``, ``cycle_loss``, ``identity_loss`` (unweighted) and
            ``discriminator_accuracy``.
        """
        if isinstance(data, tuple) and len(data) == 2 and data_b is None:
            data, data_b = data
        if data_b is None:
            raise DataError("data_b is required: give images of both domains, fit(a, b)")
        a, _ = check_images(data, self.image_shape, "data", **self._place())
        b, _ = check_images(data_b, self.image_shape_b, "data_b", **self._place())
        unknown = sorted(set(options) - set(_FIT_OPTIONS))
        if unknown:
            raise DataError(
                f"CycleGAN.fit got unknown options {unknown}; it takes {', '.join(_FIT_OPTIONS)}"
                " (the learning rates and loss weights are constructor settings)"
            )
        settings = {"n_epochs": self.n_epochs, "batch_size": self.batch_size, "seed": self.seed}
        settings.update(options)
        a, b = _unpaired(a, b, settings.get("seed"))
        steps = [
            Step(
                "generators",
                self._generator_step,
                parameters="generators",
                learning_rate=self.generator_learning_rate,
                betas=self.betas,
            ),
            Step(
                "discriminators",
                self._discriminator_step,
                parameters="discriminators",
                learning_rate=self.discriminator_learning_rate,
                betas=self.betas,
            ),
        ]
        self._diagnostics.flush()
        try:
            history = fit_model(
                self, (to_signed(a), to_signed(b)), steps=steps, epoch_end=self._epoch_end,
                **settings,
            )
        finally:
            self._translated = None
            self._diagnostics.flush()
        self.history_ = history
        self.n_iter_ = len(history)
        self._mark_fitted()
        return self

    # ---- using the model ------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, x: Any, direction: str = "a_to_b", *, batch_size: int = 256) -> Tensor:
        """Translate images of one domain into the other.

        Args:
            x: images in [0, 1] of the source domain: (n, C, H, W), (n, H, W) for one channel,
                or flat rows (n, C*H*W).
            direction: "a_to_b" (x from domain A) or "b_to_a" (x from domain B).
            batch_size: images translated at once.

        Returns:
            The translated images in [0, 1], (n, C', H, W), or flat rows when `x` was flat.
        """
        direction = check_choice(direction, "direction", DIRECTIONS)
        self.check_fitted("translate")
        source, target = (
            (self.image_shape, self.image_shape_b)
            if direction == "a_to_b"
            else (self.image_shape_b, self.image_shape)
        )
        images, flat = check_images(x, source, "x", **self._place())
        batch_size = check_positive_int(batch_size, "batch_size")
        generator = self.generators[direction]
        was_training = self.training
        self.eval()
        try:
            out = torch.cat(
                [to_unit(generator(to_signed(chunk))) for chunk in images.split(batch_size)]
            )
        finally:
            self.train(was_training)
        return out.reshape(out.shape[0], -1) if flat else out.reshape(-1, *target)

    def sample(self, n: int, *, seed: int | None = None) -> Tensor:
        """Not available: a CycleGAN translates given images and draws nothing on its own.

        Raises:
            DataError: always; use `translate(x, direction=...)` on images of one domain.
        """
        raise DataError(
            "CycleGAN cannot sample without an input: it maps images of one domain to the other."
            " Use translate(x, direction='a_to_b' or 'b_to_a') on images of the source domain"
        )

    def log_prob(self, x: Any) -> Tensor:
        """Not available: a CycleGAN defines no density.

        Raises:
            NoDensityError: always.
        """
        raise NoDensityError(
            "CycleGAN has no density (log_prob_kind='none'). Judge its translations instead: "
            "translate(x, direction=...) and compare with the true counterparts, or score "
            "them with probgen.metrics (FID/KID, precision/recall on classifier features)"
        )

    def _place(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["image_shape"] = list(self.image_shape)
        config["image_shape_b"] = list(self.image_shape_b)
        return config


def _unpaired(a: Tensor, b: Tensor, seed: int | None) -> tuple[Tensor, Tensor]:
    """Both sets at the larger one's size: the smaller repeated in a seeded random order."""
    n = max(a.shape[0], b.shape[0])
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))

    def stretch(x: Tensor) -> Tensor:
        if x.shape[0] == n:
            return x
        repeats = -(-n // x.shape[0])
        order = torch.cat([torch.randperm(x.shape[0], generator=generator) for _ in range(repeats)])
        return x[order[:n].to(x.device)]

    return stretch(a), stretch(b)
