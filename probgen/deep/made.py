"""MADE: masked autoencoder for distribution estimation (Germain et al., 2015).

A feed-forward network whose weight matrices are multiplied by binary masks so that output
`d` (the conditional of variable `d`) depends only on the variables that come before `d` in an
ordering. The product of the conditionals is then a normalised distribution. With
`n_masks > 1` the model is trained order- and connectivity-agnostically (each minibatch uses one
of `n_masks` mask sets, each with its own ordering and hidden-unit degrees) and `log_prob`
averages the densities of the mask ensemble (a uniform mixture, still exactly normalised).

Example:
    >>> import torch
    >>> from probgen.deep.made import MADE
    >>> made = MADE(4, hidden_dims=[16], n_masks=2)
    >>> x = torch.randint(0, 2, (8, 4)).float()
    >>> made.init_for_evaluation().log_prob(x).shape
    torch.Size([8])
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probgen.core.contract import LogProbKind, Model, seeded_initialisation
from probgen.core.data import as_tensor, check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.fitting.settings import RenamedSettings, renamed_arguments

_MAX_SUPPORT = 2**20


class MaskedLinear(nn.Module):
    """A linear layer with one binary weight mask per mask set (stored as a buffer).

    Args:
        in_features: input width.
        out_features: output width.
        n_masks: number of mask sets.
        bias: whether to add a bias.
    """

    def __init__(self, in_features: int, out_features: int, n_masks: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.register_buffer("masks", torch.ones(n_masks, out_features, in_features))

    def forward(self, inputs: torch.Tensor, mask_index: int) -> torch.Tensor:
        return F.linear(inputs, self.linear.weight * self.masks[mask_index], self.linear.bias)


def made_degrees(
    n_inputs: int,
    hidden_dims: list[int],
    order: torch.Tensor,
    generator: torch.Generator | None,
) -> list[torch.Tensor]:
    """Degrees of the input and hidden units of one MADE mask set.

    Args:
        n_inputs: number of variables D.
        hidden_dims: widths of the hidden layers.
        order: long tensor (D,), a permutation of 1..D: the position of each variable.
        generator: draws hidden degrees uniformly (connectivity-agnostic); None spreads them
            evenly over 1..D-1 (a deterministic mask).

    Returns:
        [input degrees (D,), hidden degrees of each layer].
    """
    degrees = [order.clone()]
    max_degree = max(n_inputs - 1, 0)
    for width in hidden_dims:
        low = min(int(degrees[-1].min()), max_degree)
        if max_degree == 0:
            # One variable: hidden units see no input and only feed the bias of its conditional.
            layer = torch.zeros(width, dtype=torch.long)
        elif generator is None:
            span = max_degree - low + 1
            layer = low + torch.arange(width) % span
        else:
            layer = torch.randint(low, max_degree + 1, (width,), generator=generator)
        degrees.append(layer)
    return degrees


class MADE(RenamedSettings, Model):
    """Masked autoencoder for distribution estimation over binary or categorical vectors.

    Args:
        n_inputs: number of variables D (the event shape is (D,)).
        hidden_dims: widths of the hidden layers (the MADE paper uses one layer of 500).
        n_masks: number of mask sets (orderings and connectivities). 1 gives a single
            autoregressive model; more gives order-agnostic training and an ensemble
            `log_prob` (log-mean-exp over the masks).
        likelihood: "bernoulli" (data in {0, 1}) or "categorical" (codes 0..n_categories-1).
        n_categories: number of categories per variable (categorical likelihood only).
        order: "natural" (variables in column order) or "random" (one random ordering per mask
            set). Default: natural for one mask, random for several.
        connectivity: "random" (hidden degrees drawn per mask set, the MADE paper's choice) or
            "even" (spread evenly; deterministic).
        direct_connection: add a masked linear map from inputs straight to the outputs.
        activation: "relu", "tanh" or "elu".
        mask_seed: seed of the orderings and connectivities.
        n_epochs, batch_size, learning_rate, seed: training settings (overridable in `fit`).

    Example:
        >>> import torch
        >>> from probgen.deep.made import MADE
        >>> x = torch.randint(0, 2, (64, 5)).float()
        >>> made = MADE(5, hidden_dims=[32], n_epochs=2, seed=0).fit(x)
        >>> made.log_prob(x[:3]).shape
        torch.Size([3])
    """

    log_prob_kind = LogProbKind.EXACT
    fitted_attributes = ("history_", "n_iter_")
    distributed_fit = True  # one model from all ranks' shards (probgen.distributed)

    def __init__(
        self,
        n_inputs: int,
        hidden_dims: list[int] | tuple[int, ...] = (500,),
        n_masks: int = 1,
        likelihood: str = "bernoulli",
        n_categories: int | None = None,
        order: str | None = None,
        connectivity: str = "random",
        direct_connection: bool = False,
        activation: str = "relu",
        mask_seed: int = 0,
        n_epochs: int = 10,
        batch_size: int = 100,
        learning_rate: float = 1e-3,
        seed: int | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        n_epochs, learning_rate = renamed_arguments(
            type(self).__name__, deprecated, n_epochs=n_epochs, learning_rate=learning_rate
        ).values()
        self.n_inputs = check_positive_int(n_inputs, "n_inputs")
        self.hidden_dims = [check_positive_int(w, "hidden_dims[]") for w in hidden_dims]
        self.n_masks = check_positive_int(n_masks, "n_masks")
        self.likelihood = check_choice(likelihood, "likelihood", ("bernoulli", "categorical"))
        if self.likelihood == "categorical":
            if n_categories is None:
                raise DataError("n_categories is required for likelihood='categorical'")
            self.n_categories = check_positive_int(n_categories, "n_categories", minimum=2)
        else:
            if n_categories not in (None, 2):
                raise DataError("n_categories must be None or 2 for likelihood='bernoulli'")
            self.n_categories = 2
        self.order = check_choice(
            order if order is not None else ("natural" if n_masks == 1 else "random"),
            "order",
            ("natural", "random"),
        )
        self.connectivity = check_choice(connectivity, "connectivity", ("random", "even"))
        self.direct_connection = bool(direct_connection)
        self.activation = check_choice(activation, "activation", ("relu", "tanh", "elu"))
        self.mask_seed = int(mask_seed)
        self.n_epochs = check_positive_int(n_epochs, "n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = float(learning_rate)
        self.seed = seed
        self.event_shape = torch.Size([self.n_inputs])

        # Categorical inputs enter one-hot; Bernoulli outputs need one logit per variable.
        self._in_per_variable = 1 if self.likelihood == "bernoulli" else self.n_categories
        self._out_per_variable = 1 if self.likelihood == "bernoulli" else self.n_categories
        # Seeded initial weights without touching the caller's global random state.
        with seeded_initialisation(seed):
            widths = [self.n_inputs * self._in_per_variable, *self.hidden_dims]
            self.layers = nn.ModuleList(
                MaskedLinear(a, b, self.n_masks) for a, b in zip(widths[:-1], widths[1:])
            )
            n_outputs = self.n_inputs * self._out_per_variable
            self.output = MaskedLinear(widths[-1], n_outputs, self.n_masks)
            self.direct = (
                MaskedLinear(widths[0], n_outputs, self.n_masks, False)
                if self.direct_connection
                else None
            )
        self.register_buffer("orders", torch.zeros(self.n_masks, self.n_inputs, dtype=torch.long))
        self._build_masks()
        # Which mask set the next training minibatch uses; a buffer so that checkpoints (and
        # fit(resume=True)) continue the cycle where it stopped.
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))

    # ---- construction ----------------------------------------------------------------------
    # Own config: `n_categories` is stored as 2 for Bernoulli data but given as None.
    def get_config(self) -> dict[str, Any]:
        return {
            "n_inputs": self.n_inputs,
            "hidden_dims": list(self.hidden_dims),
            "n_masks": self.n_masks,
            "likelihood": self.likelihood,
            "n_categories": self.n_categories if self.likelihood == "categorical" else None,
            "order": self.order,
            "connectivity": self.connectivity,
            "direct_connection": self.direct_connection,
            "activation": self.activation,
            "mask_seed": self.mask_seed,
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }

    def _build_masks(self) -> None:
        generator = torch.Generator().manual_seed(self.mask_seed)
        for index in range(self.n_masks):
            if self.order == "natural":
                order = torch.arange(1, self.n_inputs + 1)
            else:
                order = torch.randperm(self.n_inputs, generator=generator) + 1
            degrees = made_degrees(
                self.n_inputs,
                self.hidden_dims,
                order,
                generator if self.connectivity == "random" else None,
            )
            self.orders[index] = order
            input_degrees = order.repeat_interleave(self._in_per_variable)
            output_degrees = order.repeat_interleave(self._out_per_variable)
            previous = input_degrees
            for layer, current in zip(self.layers, degrees[1:]):
                layer.masks[index] = (current[:, None] >= previous[None, :]).float()
                previous = current
            self.output.masks[index] = (output_degrees[:, None] > previous[None, :]).float()
            if self.direct is not None:
                self.direct.masks[index] = (
                    output_degrees[:, None] > input_degrees[None, :]
                ).float()

    def init_for_evaluation(self) -> MADE:
        """Mark the (randomly initialised) model usable without fitting; returns self."""
        self._mark_fitted()
        return self

    # ---- network ---------------------------------------------------------------------------
    def _activate(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(hidden)
        if self.activation == "tanh":
            return torch.tanh(hidden)
        return F.elu(hidden)

    def _network_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return x.to(self.dtype)
        return F.one_hot(x.long(), self.n_categories).to(self.dtype).flatten(-2)

    def logits(self, x: torch.Tensor, mask_index: int = 0) -> torch.Tensor:
        """Conditional logits under mask set `mask_index`.

        Args:
            x: checked data (batch, D): floats in {0,1} or integer codes.
            mask_index: which mask set.

        Returns:
            (batch, D) Bernoulli logits or (batch, D, n_categories) categorical logits.
        """
        inputs = self._network_input(x)
        hidden = inputs
        for layer in self.layers:
            hidden = self._activate(layer(hidden, mask_index))
        out = self.output(hidden, mask_index)
        if self.direct is not None:
            out = out + self.direct(inputs, mask_index)
        if self.likelihood == "categorical":
            return out.unflatten(-1, (self.n_inputs, self.n_categories))
        return out

    def log_prob_under_mask(self, x: torch.Tensor, mask_index: int) -> torch.Tensor:
        """Exact log p(x) of the autoregressive model of one mask set (x already checked)."""
        logits = self.logits(x, mask_index)
        if self.likelihood == "bernoulli":
            target = x.to(logits.dtype)
            return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        log_probs = torch.log_softmax(logits, -1)
        return log_probs.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def _ensemble_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        per_mask = torch.stack(
            [self.log_prob_under_mask(x, index) for index in range(self.n_masks)], 0
        )
        return torch.logsumexp(per_mask, 0) - math.log(self.n_masks)

    # ---- input -----------------------------------------------------------------------------
    def _check_input(self, x: Any, name: str = "x") -> torch.Tensor:
        # as_tensor rejects NaN, infinities and a wrong width with messages naming `name`.
        tensor = as_tensor(x, name, event_shape=(self.n_inputs,))
        top = self.n_categories - 1
        if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
            raise DataError(
                f"{name} must hold {self._value_description()}; found non-integer values"
            )
        if tensor.dtype == torch.bool:
            tensor = tensor.long()
        if (tensor < 0).any() or (tensor > top).any():
            bad = tensor[(tensor < 0) | (tensor > top)][0].item()
            raise DataError(f"{name} must hold {self._value_description()}; found {bad}")
        tensor = tensor.to(self.device)
        if self.likelihood == "bernoulli":
            return tensor.to(self.dtype)
        return tensor.long()

    def _value_description(self) -> str:
        if self.likelihood == "bernoulli":
            return "binary values 0/1 (likelihood='bernoulli')"
        return f"category codes 0..{self.n_categories - 1}"

    # ---- density contract ------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any) -> torch.Tensor:
        """Exact log-mass of each row of `x` (log-mean-exp over the mask ensemble).

        Args:
            x: array (*batch, D) of binary values or category codes.

        Returns:
            Tensor (*batch,).

        Raises:
            NotFittedError: before `fit`.
            DataError: wrong width, NaN, values outside the support.
        """
        self.check_fitted("log_prob")
        checked = self._check_input(x)
        batch_shape = checked.shape[:-1]
        flat = checked.reshape(-1, self.n_inputs)
        return self._ensemble_log_prob(flat).reshape(batch_shape)

    def sample(self, n: int, *, seed: int | torch.Generator | None = None) -> torch.Tensor:
        """Draw `n` vectors: a mask set uniformly, then each variable in that set's order.

        Returns:
            Tensor (n, D): floats 0/1 (Bernoulli) or long codes (categorical).
        """
        self.check_fitted("sample")
        n = check_positive_int(n, "n")
        generator = self.make_generator(seed)
        device = self.device
        mask_choice = torch.randint(0, self.n_masks, (n,), generator=generator, device=device)
        dtype = self.dtype if self.likelihood == "bernoulli" else torch.long
        draws = torch.zeros(n, self.n_inputs, dtype=dtype, device=device)
        with torch.no_grad():
            for index in range(self.n_masks):
                rows = (mask_choice == index).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    continue
                current = draws[rows]
                for variable in torch.argsort(self.orders[index]).tolist():
                    logits = self.logits(current, index)[:, variable]
                    if self.likelihood == "bernoulli":
                        probabilities = torch.sigmoid(logits)
                        uniform = torch.rand(
                            probabilities.shape,
                            generator=generator,
                            device=device,
                            dtype=probabilities.dtype,
                        )
                        current[:, variable] = (uniform < probabilities).to(dtype)
                    else:
                        probabilities = torch.softmax(logits, -1)
                        current[:, variable] = torch.multinomial(
                            probabilities, 1, generator=generator
                        ).squeeze(-1)
                draws[rows] = current
        return draws

    def enumerate_support(self) -> torch.Tensor:
        """Every vector of the (small) event space, shape (n_categories**D, D).

        Raises:
            DataError: the space has more than 2**20 points.
        """
        size = self.n_categories**self.n_inputs
        if size > _MAX_SUPPORT:
            raise DataError(
                f"enumerate_support: {self.n_categories}**{self.n_inputs} events is too many "
                f"to list (limit {_MAX_SUPPORT})"
            )
        values = list(itertools.product(range(self.n_categories), repeat=self.n_inputs))
        support = torch.tensor(values, dtype=torch.long, device=self.device)
        return support.to(self.dtype) if self.likelihood == "bernoulli" else support

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: Any, *, validation_data: Any = None, **options: Any) -> MADE:
        """Maximum likelihood with Adam, one mask set per minibatch (cycling through them).

        Args:
            data: array (n, D) of binary values or category codes.
            validation_data: optional held-out array; its ensemble log-likelihood is recorded
                each epoch (and drives `early_stopping_patience`).
            **options: settings for `probgen.fitting.fit_model`, overriding the model's
                (n_epochs, batch_size, learning_rate, seed, weight_decay, lr_schedule, grad_clip,
                early_stopping_patience, checkpoint_dir, resume, progress, max_steps, ...).

        Returns:
            self, with `history_` (one dict per epoch) and `n_iter_`.
        """
        from probgen.fitting.batching import first_tensor
        from probgen.fitting.loop import fit_with_model_settings

        train = self._check_input(data, "data")
        validation = (
            None
            if validation_data is None
            else self._check_input(validation_data, "validation_data")
        )

        def loss(model: MADE, batch: Any) -> torch.Tensor:
            index = int(model.mask_step) % model.n_masks
            model.mask_step += 1
            return -model.log_prob_under_mask(first_tensor(batch), index).mean()

        def validation_log_prob(model: MADE, batch: Any) -> torch.Tensor:
            return model._ensemble_log_prob(first_tensor(batch))

        fit_with_model_settings(
            self,
            train,
            loss=loss,
            validation_data=validation,
            validation_log_prob=validation_log_prob,
            options=options,
        )
        return self
