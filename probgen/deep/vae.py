"""Variational autoencoders as Pyro programs: `VAE`.

The generative model `p(z) p(x | z)` and the amortised guide `q(z | x)` are Pyro programs
(`VAE.model`, `VAE.guide`) whose networks are ordinary `nn.Module`s held by the VAE, so every
parameter lives in its state dict (never in Pyro's global parameter store). Training minimises
the negative ELBO through Pyro's `Trace_ELBO` / `TraceMeanField_ELBO`, or the IWAE bound
(`RenyiELBO(alpha=0)`) with vectorised particles.

`log_prob` is honest about what it returns: by default the ELBO (`LogProbKind.LOWER_BOUND`);
with `log_prob_estimator="iwae"` the importance-weighted estimate with `log_prob_samples`
samples (`LogProbKind.ESTIMATE`). `elbo(x, n_samples)` and `iwae(x, k)` give either figure
explicitly. Both use a fixed seed by default, so repeated calls agree.

Example:
    >>> import torch
    >>> from probgen.deep.vae import VAE
    >>> x = torch.bernoulli(torch.full((64, 6), 0.3), generator=torch.Generator().manual_seed(0))
    >>> vae = VAE((6,), latent_dim=2, hidden_dims=(16,), n_epochs=2, seed=0).fit(x)
    >>> vae.log_prob(x[:3]).shape, vae.log_prob_kind.value
    (torch.Size([3]), 'lower_bound')
    >>> vae.iwae(x[:3], k=50).shape
    torch.Size([3])
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.deep.vae_networks import _Decoder, _Encoder, _Independent
from probgen.fitting.elbo import pyro_elbo_loss
from probgen.fitting.loop import fit_with_model_settings
from probgen.fitting.settings import RenamedSettings, renamed_arguments

__all__ = ["VAE"]

_LIKELIHOODS = ("bernoulli", "gaussian", "categorical")
_NETWORKS = ("mlp", "conv")
_OBJECTIVES = ("elbo", "meanfield_elbo", "iwae")
_ESTIMATORS = ("elbo", "iwae")
# Bound on the number of decoded values held at once when scoring with many samples.
_CHUNK_ELEMENTS = 1 << 24


def _validation_elbo(model: VAE, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One-sample ELBO per held-out example (cheap; recorded each epoch)."""
    labels = batch[1] if len(batch) > 1 else None
    return model._elbo_values(batch[0], labels, 1, None)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class VAE(RenamedSettings, Model):
    """A variational autoencoder (optionally conditional on class labels) as a Pyro program.

    Args:
        input_shape: event shape of one example, e.g. (784,), (28, 28) or (1, 28, 28).
        latent_dim: dimension of the Gaussian latent variable z.
        likelihood: "bernoulli" (binary data), "gaussian" (real data; a learned scale per
            feature) or "categorical" (integer codes 0..n_categories-1).
        encoder: "mlp" or "conv" (images: input_shape (H, W) or (C, H, W)).
        decoder: "mlp" or "conv"; by default the same as `encoder`.
        hidden_dims: hidden layer sizes of the MLPs (after the convolutions for "conv").
        n_classes: number of classes for the conditional VAE (labels are then required in
            `fit`, `log_prob` and `sample`); None for an unconditional VAE.
        n_categories: number of symbols for the categorical likelihood.
        objective: training objective: "elbo" (Trace_ELBO), "meanfield_elbo"
            (TraceMeanField_ELBO, analytic KL) or "iwae" (RenyiELBO with alpha=0).
        n_particles: particles per example for the objective (vectorised).
        log_prob_estimator: what `log_prob` returns: "elbo" (kind `lower_bound`) or "iwae"
            (kind `estimate`).
        log_prob_samples: samples used by `log_prob` (k of the IWAE estimate, or the number of
            ELBO samples averaged).
        n_epochs, batch_size, learning_rate: training settings (overridable in `fit`).
        seed: seed of the initial weights and of training; None draws fresh randomness.

    Example:
        >>> import torch
        >>> vae = VAE((8, 8), latent_dim=2, likelihood="gaussian", encoder="conv", seed=0)
        >>> vae.fit(torch.randn(32, 8, 8), n_epochs=1).sample(4, seed=0).shape
        torch.Size([4, 8, 8])
    """

    fitted_attributes = ("history_",)
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        input_shape: tuple[int, ...] | list[int] | int,
        latent_dim: int = 2,
        likelihood: str = "bernoulli",
        encoder: str = "mlp",
        decoder: str | None = None,
        hidden_dims: tuple[int, ...] | list[int] = (200, 200),
        n_classes: int | None = None,
        n_categories: int | None = None,
        objective: str = "elbo",
        n_particles: int = 1,
        log_prob_estimator: str = "elbo",
        log_prob_samples: int = 16,
        n_epochs: int = 20,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        seed: int | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        n_epochs, learning_rate = renamed_arguments(
            type(self).__name__, deprecated, n_epochs=n_epochs, learning_rate=learning_rate
        ).values()
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        input_shape = tuple(
            check_positive_int(d, f"input_shape[{i}]") for i, d in enumerate(input_shape)
        )
        if not input_shape:
            raise DataError("input_shape must have at least one dimension")
        self.input_shape = input_shape
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.likelihood = check_choice(likelihood, "likelihood", _LIKELIHOODS)
        self.encoder_kind = check_choice(encoder, "encoder", _NETWORKS)
        self.decoder_kind = check_choice(decoder or encoder, "decoder", _NETWORKS)
        self.hidden_dims = tuple(
            check_positive_int(d, f"hidden_dims[{i}]") for i, d in enumerate(hidden_dims)
        )
        self.n_classes = None if n_classes is None else check_positive_int(n_classes, "n_classes")
        if self.likelihood == "categorical":
            if n_categories is None:
                raise DataError("likelihood='categorical' needs n_categories")
            self.n_categories = check_positive_int(n_categories, "n_categories", minimum=2)
        else:
            if n_categories is not None:
                raise DataError("n_categories only applies to likelihood='categorical'")
            self.n_categories = None
        self.objective = check_choice(objective, "objective", _OBJECTIVES)
        self.n_particles = check_positive_int(n_particles, "n_particles")
        self.log_prob_estimator = check_choice(
            log_prob_estimator, "log_prob_estimator", _ESTIMATORS
        )
        self.log_prob_samples = check_positive_int(log_prob_samples, "log_prob_samples")
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.event_shape = torch.Size(input_shape)

        n_label_features = self.n_classes or 0
        # Categorical codes enter the encoder scaled to [0, 1].
        in_scale = 1.0 / (self.n_categories - 1) if self.n_categories else 1.0
        # Seeded initial weights without touching the caller's global random state.
        with seeded_initialisation(seed):
            self.encoder = _Encoder(
                self.encoder_kind,
                input_shape,
                self.latent_dim,
                self.hidden_dims,
                n_label_features,
                in_scale,
            )
            self.decoder = _Decoder(
                self.decoder_kind,
                input_shape,
                self.latent_dim,
                tuple(reversed(self.hidden_dims)),
                n_label_features,
                self.n_categories or 1,
            )
        if self.likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(input_shape))
        self.eval()

    # ---- configuration ---------------------------------------------------------------------
    @property
    def log_prob_kind(self) -> LogProbKind:  # type: ignore[override]
        """`lower_bound` for the ELBO estimator, `estimate` for IWAE."""
        if self.log_prob_estimator == "iwae":
            return LogProbKind.ESTIMATE
        return LogProbKind.LOWER_BOUND

    # Own config: `encoder`/`decoder` hold the networks; the config keeps their kind names.
    def get_config(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "encoder": self.encoder_kind,
            "decoder": self.decoder_kind,
            "hidden_dims": list(self.hidden_dims),
            "n_classes": self.n_classes,
            "n_categories": self.n_categories,
            "objective": self.objective,
            "n_particles": self.n_particles,
            "log_prob_estimator": self.log_prob_estimator,
            "log_prob_samples": self.log_prob_samples,
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }

    # ---- input checking --------------------------------------------------------------------
    def _check_x(self, x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
        """Return x as (n, *input_shape) float on the model's device, and its batch shape."""
        tensor = as_tensor(x, name, event_shape=self.input_shape)
        if tensor.dim() == len(self.input_shape):
            raise DataError(
                f"{name} has shape {tuple(tensor.shape)}; give a batch of shape "
                f"(n, {', '.join(map(str, self.input_shape))})".replace(", )", ")")
            )
        if self.likelihood == "bernoulli":
            if not bool(((tensor == 0) | (tensor == 1)).all()):
                raise DataError(
                    f"{name} must be binary (0 or 1) for likelihood='bernoulli'; binarise it or "
                    f"use likelihood='gaussian'"
                )
        elif self.likelihood == "categorical":
            tensor = as_tensor(
                tensor, name, integer=True, min_value=0, max_value=self.n_categories - 1
            )
        batch_shape = tensor.shape[: tensor.dim() - len(self.input_shape)]
        flat = tensor.reshape(-1, *self.input_shape).to(device=self.device, dtype=self.dtype)
        return flat, batch_shape

    def _check_labels(self, labels: Any, n: int, name: str = "labels") -> torch.Tensor | None:
        """One-hot labels (n, n_classes) for the conditional VAE; None for the plain one."""
        if self.n_classes is None:
            if labels is not None:
                raise DataError(f"{name} given, but the VAE has no n_classes (not conditional)")
            return None
        if labels is None:
            raise DataError(f"{name} are required: the VAE is conditional (n_classes set)")
        codes = as_tensor(labels, name, integer=True, min_value=0, max_value=self.n_classes - 1)
        codes = codes.reshape(-1).long()
        if codes.numel() == 1 and n > 1:
            codes = codes.expand(n)
        if codes.numel() != n:
            raise DataError(f"{name} has {codes.numel()} entries for {n} examples")
        return F.one_hot(codes, self.n_classes).to(device=self.device, dtype=self.dtype)

    @staticmethod
    def _split(data: Any, labels: Any) -> tuple[Any, Any]:
        if isinstance(data, tuple) and len(data) == 2 and labels is None:
            return data
        return data, labels

    # ---- distributions ---------------------------------------------------------------------
    def _likelihood_dist(self, params: torch.Tensor) -> torch.distributions.Distribution:
        event_dims = len(self.input_shape)
        if self.likelihood == "bernoulli":
            base = dist.Bernoulli(logits=params, validate_args=False)
        elif self.likelihood == "gaussian":
            base = dist.Normal(params, self.log_scale.exp(), validate_args=False)
        else:
            base = dist.Categorical(logits=params, validate_args=False)
        return _Independent(base, event_dims)

    # ---- Pyro programs ---------------------------------------------------------------------
    def model(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """The generative model p(z) p(x | z[, label]) with x observed in a data plate."""
        n = x.shape[0]
        with pyro.plate("data", n, dim=-1):
            # Scalar parameters broadcast to (n, latent_dim): the same densities as a vector of
            # zeros and ones, but its log_prob costs a third less on small batches.
            prior = _Independent(
                dist.Normal(x.new_zeros(()), x.new_ones(()), validate_args=False).expand(
                    [n, self.latent_dim]
                ),
                1,
            )
            z = pyro.sample("z", prior)
            pyro.sample("x", self._likelihood_dist(self.decoder(z, labels)), obs=x)

    def guide(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """The amortised posterior q(z | x[, label])."""
        n = x.shape[0]
        with pyro.plate("data", n, dim=-1):
            loc, scale = self.encoder(x, labels)
            pyro.sample("z", _Independent(dist.Normal(loc, scale, validate_args=False), 1))

    def _make_loss(self) -> Any:
        vectorize = self.n_particles > 1
        options = dict(
            num_particles=self.n_particles, vectorize_particles=vectorize, max_plate_nesting=1
        )
        if self.objective == "iwae":
            elbo = pyro.infer.RenyiELBO(alpha=0.0, **options)
        elif self.objective == "meanfield_elbo":
            elbo = pyro.infer.TraceMeanField_ELBO(**options)
        else:
            elbo = pyro.infer.Trace_ELBO(**options)
        inner = pyro_elbo_loss(elbo)

        def loss(model: nn.Module, batch: Any) -> torch.Tensor:
            # Argument checks are done once on the whole data set, not on every step.
            with pyro.validation_enabled(False):
                return inner(model, batch)

        by_row = getattr(inner, "draws_latents_by_row", False)
        loss.draws_latents_by_row = by_row  # type: ignore[attr-defined]
        return loss

    # ---- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        data: Any,
        labels: Any = None,
        *,
        validation_data: Any = None,
        validation_labels: Any = None,
        **options: Any,
    ) -> VAE:
        """Fit by stochastic variational inference (Adam on the chosen objective).

        Args:
            data: examples (n, *input_shape), or a tuple (x, labels) for the conditional VAE.
            labels: class labels (n,) for the conditional VAE.
            validation_data: held-out examples; their ELBO per example is recorded each epoch
                (and drives `early_stopping_patience`).
            validation_labels: labels of the held-out examples.
            **options: settings for `probgen.fitting.fit_model` (n_epochs, batch_size,
                learning_rate, lr_schedule, grad_clip, early_stopping_patience, checkpoint_dir,
                resume, progress, seed, max_steps, ...).

        Returns:
            self, with `history_`.
        """
        training = self._examples(data, labels, "data", "labels")
        validation = (
            None
            if validation_data is None
            else self._examples(
                validation_data, validation_labels, "validation_data", "validation_labels"
            )
        )
        fit_with_model_settings(
            self,
            training,
            loss=self._make_loss(),
            validation_data=validation,
            validation_log_prob=_validation_elbo,
            options=options,
        )
        return self

    def _examples(
        self, data: Any, labels: Any, name: str, labels_name: str
    ) -> tuple[torch.Tensor, ...]:
        """Checked training examples: (x,), or (x, one-hot labels) for the conditional VAE."""
        data, labels = self._split(data, labels)
        x, _ = self._check_x(data, name)
        one_hot = self._check_labels(labels, x.shape[0], labels_name)
        return (x,) if one_hot is None else (x, one_hot)

    # ---- densities -------------------------------------------------------------------------
    def _log_weights(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        k: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for k draws z_i ~ q: shape (k, n)."""
        loc, scale = self.encoder(x, labels)
        noise = torch.randn(
            (k, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype
        )
        z = loc + scale * noise
        log_q = dist.Normal(loc, scale, validate_args=False).log_prob(z).sum(-1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_likelihood = self._likelihood_dist(self.decoder(z, labels)).log_prob(x)
        return log_likelihood + log_prior - log_q

    def _chunks(self, n: int, k: int) -> tuple[int, int]:
        per_example = math.prod(self.input_shape) * (self.n_categories or 1)
        examples = max(1, min(n, _CHUNK_ELEMENTS // max(per_example * min(k, 64), 1)))
        samples = max(1, min(k, _CHUNK_ELEMENTS // max(per_example * examples, 1)))
        return examples, samples

    def _elbo_values(
        self, x: torch.Tensor, labels: torch.Tensor | None, k: int, generator: Any
    ) -> torch.Tensor:
        return self._log_weights(x, labels, k, generator).mean(0)

    @torch.no_grad()
    def _estimate(self, x: Any, labels: Any, k: int, seed: Any, how: str) -> torch.Tensor:
        self.check_fitted("log_prob")
        x, labels = self._split(x, labels)
        flat, batch_shape = self._check_x(x)
        one_hot = self._check_labels(labels, flat.shape[0])
        k = check_positive_int(k, "k")
        generator = self.make_generator(0 if seed is None else seed)
        was_training = self.training
        self.eval()
        examples, samples = self._chunks(flat.shape[0], k)
        results = []
        for start in range(0, flat.shape[0], examples):
            part = flat[start : start + examples]
            part_labels = None if one_hot is None else one_hot[start : start + examples]
            running: torch.Tensor | None = None
            for done in range(0, k, samples):
                weights = self._log_weights(part, part_labels, min(samples, k - done), generator)
                if how == "iwae":
                    chunk = torch.logsumexp(weights, 0)
                    running = chunk if running is None else torch.logaddexp(running, chunk)
                else:
                    chunk = weights.sum(0)
                    running = chunk if running is None else running + chunk
            assert running is not None
            results.append(running - math.log(k) if how == "iwae" else running / k)
        self.train(was_training)
        return torch.cat(results).reshape(batch_shape)

    def elbo(
        self, x: Any, labels: Any = None, *, n_samples: int = 16, seed: int | None = None
    ) -> torch.Tensor:
        """The evidence lower bound per example, averaged over `n_samples` draws of q(z | x).

        Args:
            x: examples (*batch, *input_shape), or a tuple (x, labels).
            labels: class labels for the conditional VAE.
            n_samples: draws of z per example.
            seed: seed of the draws (0 when None, so repeated calls agree).

        Returns:
            Tensor (*batch) of lower bounds on log p(x) in nats.
        """
        return self._estimate(x, labels, n_samples, seed, "elbo")

    def iwae(
        self, x: Any, labels: Any = None, *, k: int = 5000, seed: int | None = None
    ) -> torch.Tensor:
        """The importance-weighted estimate log (1/k) sum_i p(x, z_i) / q(z_i | x).

        Its expectation is a lower bound on log p(x) that tightens as `k` grows (Burda et al.,
        2016); the IWAE paper reports test log-likelihoods with k = 5000.

        Args:
            x: examples (*batch, *input_shape), or a tuple (x, labels).
            labels: class labels for the conditional VAE.
            k: importance samples per example.
            seed: seed of the draws (0 when None, so repeated calls agree).

        Returns:
            Tensor (*batch) of log-likelihood estimates in nats.
        """
        return self._estimate(x, labels, k, seed, "iwae")

    def log_prob(
        self, x: Any, labels: Any = None, *, k: int | None = None, seed: int | None = None
    ) -> torch.Tensor:
        """What `log_prob_kind` says: the ELBO (`lower_bound`) or the IWAE estimate (`estimate`).

        Args:
            x: examples (*batch, *input_shape), or a tuple (x, labels).
            labels: class labels for the conditional VAE.
            k: samples for the configured estimator (default `log_prob_samples`).
            seed: seed of the draws (0 when None, so repeated calls agree).

        Returns:
            Tensor (*batch) in nats.
        """
        k = self.log_prob_samples if k is None else k
        return self._estimate(x, labels, k, seed, self.log_prob_estimator)

    # ---- encode, decode, sample ------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Any, labels: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z | x), each (*batch, latent_dim)."""
        self.check_fitted("encode")
        x, labels = self._split(x, labels)
        flat, batch_shape = self._check_x(x)
        loc, scale = self.encoder(flat, self._check_labels(labels, flat.shape[0]))
        return loc.reshape(*batch_shape, -1), scale.reshape(*batch_shape, -1)

    @torch.no_grad()
    def decode(self, z: Any, labels: Any = None) -> torch.Tensor:
        """Mean of p(x | z): probabilities (Bernoulli), means (Gaussian), or category
        probabilities (..., n_categories) (categorical)."""
        self.check_fitted("decode")
        codes = as_tensor(z, "z", event_shape=(self.latent_dim,)).to(self.device, self.dtype)
        flat = codes.reshape(-1, self.latent_dim)
        params = self.decoder(flat, self._check_labels(labels, flat.shape[0]))
        if self.likelihood == "bernoulli":
            mean = torch.sigmoid(params)
        elif self.likelihood == "gaussian":
            mean = params
        else:
            mean = torch.softmax(params, -1)
        return mean.reshape(*codes.shape[:-1], *mean.shape[1:])

    @torch.no_grad()
    def reconstruct(self, x: Any, labels: Any = None) -> torch.Tensor:
        """decode(mean of q(z | x)): the mean reconstruction of each example."""
        x, labels = self._split(x, labels)
        loc, _ = self.encode(x, labels)
        return self.decode(loc, labels)

    @torch.no_grad()
    def sample(
        self, n: int, *, seed: int | None = None, labels: Any = None, mean: bool = False
    ) -> torch.Tensor:
        """Draw n examples: z ~ N(0, I), then x ~ p(x | z) (or its mean when `mean=True`).

        Args:
            n: number of draws.
            seed: seed of the draws.
            labels: one label or n labels for the conditional VAE.
            mean: return the decoder's mean instead of a draw.

        Returns:
            Tensor (n, *input_shape) (categorical: integer codes as floats).
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        z = torch.randn(
            (n, self.latent_dim), generator=generator, device=self.device, dtype=self.dtype
        )
        one_hot = self._check_labels(labels, n)
        params = self.decoder(z, one_hot)
        if self.likelihood == "bernoulli":
            probs = torch.sigmoid(params)
            return probs if mean else torch.bernoulli(probs, generator=generator)
        if self.likelihood == "gaussian":
            if mean:
                return params
            noise = torch.randn(
                params.shape, generator=generator, device=self.device, dtype=self.dtype
            )
            return params + self.log_scale.exp() * noise
        probs = torch.softmax(params, -1)
        if mean:
            return probs
        flat = probs.reshape(-1, probs.shape[-1])
        codes = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
        return codes.to(self.dtype)
