"""Deep one-class classification: `DeepSVDD` (Ruff et al., 2018).

A bias-free network phi maps the (normal) training data into a small hypersphere around a
centre c, fixed before training as the mean of phi over the training data at the initial
weights (entries nearer zero than `center_eps` pushed to +-eps, as in the authors' code, so
that no coordinate can be made trivially zero). The one-class objective minimises the mean
squared distance ||phi(x) - c||^2 (plus weight decay); the soft-boundary objective minimises
R^2 + (1 / nu) mean(max(0, ||phi(x) - c||^2 - R^2)), with the radius R set after each epoch
(after `warm_up_epochs`) to the (1 - nu)-quantile of the training distances. The anomaly score
is the squared distance (minus R^2 for soft-boundary); `score_samples` is its negative.
Optionally the network is first pretrained as the encoder of an autoencoder, as the paper does.

Example:
    >>> import torch
    >>> from probgen.anomaly import DeepSVDD
    >>> x = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    >>> svdd = DeepSVDD(hidden_dims=(16,), rep_dim=4, n_epochs=5, seed=0).fit(x)
    >>> svdd.center.shape, svdd.predict(torch.tensor([[9.0, 9.0, 9.0]])).tolist()
    (torch.Size([4]), [-1])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from probgen.anomaly.autoencoder import _check_shape, _check_sizes
from probgen.anomaly.base import ThresholdedDetector, as_examples, batched_scores
from probgen.anomaly.base import check_contamination as _check_contamination
from probgen.anomaly.networks import svdd_decoder, svdd_encoder
from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError, NoDensityError
from probgen.fitting.loop import fit_model, fit_with_model_settings

__all__ = ["DeepSVDD"]

_OBJECTIVES = ("one-class", "soft-boundary")
_ARCHITECTURES = ("mlp", "conv")
_SETTINGS = ("n_epochs", "batch_size", "learning_rate", "seed", "weight_decay")


class DeepSVDD(ThresholdedDetector, Model):
    """Deep Support Vector Data Description: one-class anomaly detection by a hypersphere.

    Args:
        input_shape: shape of one example; None takes it from the data in `fit`.
        architecture: "mlp" (bias-free linear layers with leaky ReLU) or "conv" (the paper's
            bias-free LeNet; examples (C, H, W) or (H, W)).
        hidden_dims: hidden layer sizes of the MLP (ignored by "conv").
        rep_dim: size of the representation phi(x).
        objective: "one-class" (mean squared distance to c) or "soft-boundary" (with `nu`).
        nu: soft-boundary trade-off in (0, 1]: about the fraction of training points left
            outside the sphere.
        contamination: fraction of the training examples taken as outliers; sets `offset_`.
        pretrain_epochs: epochs of autoencoder pretraining of the network (0: none).
        warm_up_epochs: soft-boundary epochs before R is first updated.
        center_eps: centre entries nearer zero than this are set to +-center_eps.
        n_epochs, batch_size, learning_rate: training settings (overridable in `fit`).
        weight_decay: L2 penalty of the optimiser (the paper's lambda / 2).
        seed: seed of the initial weights and of training; None draws fresh randomness.

    Attributes:
        center: the centre c (a buffer, saved with the model).
        radius: R (a buffer; 0 for the one-class objective).
        offset_: the threshold on `score_samples` set by `fit`.
        history_: one dict per epoch (`train_loss`, and `radius` for soft-boundary).
    """

    log_prob_kind = LogProbKind.NONE
    fitted_attributes = ("history_", "offset_")

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int] | int | None = None,
        architecture: str = "mlp",
        hidden_dims: tuple[int, ...] | list[int] = (128, 64),
        rep_dim: int = 32,
        objective: str = "one-class",
        nu: float = 0.1,
        contamination: float = 0.1,
        pretrain_epochs: int = 0,
        warm_up_epochs: int = 10,
        center_eps: float = 0.1,
        n_epochs: int = 50,
        batch_size: int = 128,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = _check_shape(input_shape)
        self.architecture = check_choice(architecture, "architecture", _ARCHITECTURES)
        self.hidden_dims = _check_sizes(hidden_dims, "hidden_dims")
        self.rep_dim = check_positive_int(rep_dim, "rep_dim")
        self.objective = check_choice(objective, "objective", _OBJECTIVES)
        if not (isinstance(nu, (int, float)) and 0 < nu <= 1):
            raise DataError(f"nu must lie in (0, 1], got {nu!r}")
        self.nu = float(nu)
        self.contamination = _check_contamination(contamination)
        self.pretrain_epochs = check_positive_int(pretrain_epochs, "pretrain_epochs", minimum=0)
        self.warm_up_epochs = check_positive_int(warm_up_epochs, "warm_up_epochs", minimum=0)
        if not (isinstance(center_eps, (int, float)) and center_eps >= 0):
            raise DataError(f"center_eps must be >= 0, got {center_eps!r}")
        self.center_eps = float(center_eps)
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
            raise DataError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.offset_ = None
        self.register_buffer("center", torch.zeros(self.rep_dim))
        self.register_buffer("radius", torch.zeros(()))
        self.encoder: nn.Module | None = None
        if self.input_shape is not None:
            self._build(self.input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # tuples kept: see AutoencoderDetector.get_config
        config["input_shape"] = self.input_shape
        config["hidden_dims"] = self.hidden_dims
        return config

    # ---- network ----------------------------------------------------------------------------
    def _network_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.architecture == "mlp":
            return shape
        if len(shape) == 2:
            return (1, *shape)
        if len(shape) != 3 or min(shape[1:]) < 4:
            raise DataError(
                f"architecture='conv' needs examples of shape (C, H, W) or (H, W) with H, W >= 4; "
                f"got {shape}"
            )
        return shape

    def _build(self, shape: tuple[int, ...]) -> None:
        device, dtype = self.device, self.dtype
        with seeded_initialisation(self.seed):
            self.encoder = svdd_encoder(
                self.architecture, self._network_shape(shape), self.hidden_dims, self.rep_dim
            )
        self.encoder.to(device=device, dtype=dtype)

    def _examples(self, x: Any, name: str) -> torch.Tensor:
        tensor = as_examples(x, name, dtype=self.dtype, device=self.device)
        shape = tuple(tensor.shape[1:])
        if self.input_shape is not None and shape != self.input_shape:
            raise DataError(
                f"{name} has examples of shape {shape}; the detector was built for "
                f"{self.input_shape}"
            )
        return tensor.reshape(len(tensor), *self._network_shape(shape))

    def _distances(self, x: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x) - self.center).pow(2).sum(1)

    # ---- fitting ----------------------------------------------------------------------------
    def _pretrain(self, x: torch.Tensor, options: dict[str, Any]) -> None:
        """Train the encoder with a throw-away MLP decoder as an autoencoder (the paper's start)."""
        with seeded_initialisation(None if self.seed is None else self.seed + 1):
            decoder = svdd_decoder(x.shape[1:], self.hidden_dims or (128,), self.rep_dim)
        decoder.to(device=x.device, dtype=x.dtype)
        pair = nn.ModuleDict({"encoder": self.encoder, "decoder": decoder})

        def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
            out = model["decoder"](model["encoder"](batch))
            return (out - batch.flatten(1)).pow(2).sum(1).mean()

        settings = {name: getattr(self, name) for name in _SETTINGS}
        settings.update({k: v for k, v in options.items() if k in ("batch_size", "learning_rate")})
        settings["n_epochs"] = self.pretrain_epochs
        fit_model(pair, x, loss=loss, **settings)

    @torch.no_grad()
    def init_center(self, X: Any) -> torch.Tensor:
        """Set `center` to the mean of the network's outputs on `X` (before training).

        The forward pass runs in training mode, as the training steps do (batch norm on batch
        statistics), and leaves the batch-norm running statistics as they were.

        Returns:
            The centre, with entries nearer zero than `center_eps` set to +-center_eps.
        """
        x = self._examples(X, "X")
        saved = {k: v.clone() for k, v in self.encoder.state_dict().items()}
        self.encoder.train()
        try:
            total = torch.zeros(self.rep_dim, device=x.device, dtype=torch.float64)
            for start in range(0, len(x), self.batch_size):
                total += self.encoder(x[start : start + self.batch_size]).double().sum(0)
        finally:
            self.encoder.load_state_dict(saved)
            self.encoder.eval()
        center = (total / len(x)).to(self.dtype)
        small = center.abs() < self.center_eps
        center[small & (center < 0)] = -self.center_eps
        center[small & (center >= 0)] = self.center_eps
        self.center = center
        return center

    def fit(self, X: Any, y: Any = None, **options: Any) -> DeepSVDD:
        """Train the network on `X` (normal data) and set `offset_` from the training scores.

        Args:
            X: training examples (n, n_features) or (n, *example_shape).
            y: ignored (scikit-learn's signature).
            **options: settings for `probgen.fitting.fit_model` (n_epochs, batch_size,
                learning_rate, lr_schedule, ...).

        Returns:
            self, with `center`, `radius`, `history_` and `offset_`.
        """
        tensor = as_examples(X, "X", dtype=self.dtype, device=self.device)
        self.input_shape = None
        self.input_shape = tuple(tensor.shape[1:])
        x = self._examples(tensor, "X")
        self._build(self.input_shape)  # a fresh, seeded network on every fit
        self.radius = torch.zeros((), device=x.device, dtype=self.dtype)
        if self.pretrain_epochs:
            self._pretrain(x, options)
        self.init_center(tensor)
        soft = self.objective == "soft-boundary"

        def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
            distances = model._distances(batch)
            if not soft:
                return distances.mean()
            r2 = model.radius.pow(2)
            return r2 + torch.relu(distances - r2).mean() / model.nu

        def epoch_end(model: nn.Module, record: dict) -> None:
            if soft and record["epoch"] > self.warm_up_epochs:
                was_training = model.training
                model.eval()
                with torch.no_grad():
                    distances = batched_scores(model._distances, x, self.scoring_batch_size)
                model.radius = torch.quantile(distances.sqrt().double(), 1 - model.nu).to(
                    model.radius.dtype
                )
                model.train(was_training)
            record["radius"] = float(model.radius)

        fit_with_model_settings(
            self,
            x,
            loss=loss,
            options={**options, "epoch_end": epoch_end},
            setting_names=_SETTINGS,
        )
        self.offset_ = None
        self._set_offset(self._normality(tensor).double().cpu().numpy())
        return self

    # ---- scores -----------------------------------------------------------------------------
    def _normality(self, x: Any) -> torch.Tensor:
        self.check_fitted("score_samples")
        examples = self._examples(x, "X")
        self.eval()
        distances = batched_scores(self._distances, examples, self.scoring_batch_size)
        if self.objective == "soft-boundary":
            distances = distances - self.radius.pow(2)
        return -distances

    def _check_offset(self, method: str) -> float:
        self.check_fitted(method)
        return super()._check_offset(method)

    def log_prob(self, x: Any) -> torch.Tensor:
        raise NoDensityError(
            "DeepSVDD has no density; use score_samples (minus the squared distance to the centre)"
        )
