"""The density contract shared by every probgen model.

`Density` is the protocol (what a caller may rely on); `Model` is the `torch.nn.Module` base
class that gives every model seeding, device and dtype handling, `NotFittedError`, and
`save` / `probgen.load`.

Example:
    >>> import torch
    >>> from probgen.core.contract import LogProbKind, Model
    >>> class Coin(Model):
    ...     log_prob_kind = LogProbKind.EXACT
    ...     def __init__(self, p: float = 0.5):
    ...         super().__init__()
    ...         self.p = p
    ...         self.event_shape = torch.Size()
    ...         self.register_buffer("logit", torch.tensor(0.0))
    ...     def log_prob(self, x):
    ...         return torch.distributions.Bernoulli(logits=self.logit).log_prob(x)
    >>> Coin().log_prob(torch.tensor([0.0, 1.0])).exp()
    tensor([0.5000, 0.5000])
    >>> Coin(0.3).get_config()  # derived from the constructor's signature
    {'p': 0.3}
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from probgen.core.errors import DataError, NoDensityError, NotFittedError
from probgen.core.registry import register_model_class


class LogProbKind(str, enum.Enum):
    """What a model's `log_prob` returns.

    - ``EXACT``: the normalised log-density or log-mass.
    - ``LOWER_BOUND``: a lower bound on it (an ELBO).
    - ``ESTIMATE``: a stochastic estimate of it (importance weighting, AIS).
    - ``UNNORMALIZED``: the log-density up to an unknown additive constant.
    - ``NONE``: no density at all; `log_prob` raises `NoDensityError`.
    """

    EXACT = "exact"
    LOWER_BOUND = "lower_bound"
    ESTIMATE = "estimate"
    UNNORMALIZED = "unnormalized"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@runtime_checkable
class Density(Protocol):
    """What every probgen model offers (see DESIGN.md, "The density contract")."""

    event_shape: torch.Size
    log_prob_kind: LogProbKind

    def fit(self, data: Any, **options: Any) -> Density: ...

    def log_prob(self, x: Any) -> torch.Tensor: ...

    def sample(self, n: int, *, seed: int | None = None) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Density: ...

    def save(self, path: str | Path) -> None: ...


class Model(nn.Module):
    """Base class of probgen models: an `nn.Module` with the density contract's plumbing.

    Subclasses set `log_prob_kind` (class or instance attribute) and `event_shape`, store
    parameters as `nn.Parameter`s or buffers, and keep each constructor argument in the
    attribute of the same name (or override `get_config()`), so that `cls(**get_config())`
    followed by `load_state_dict` rebuilds the model. Fitted values that are not tensors
    (history, iteration counts) are listed in `fitted_attributes` and saved as JSON.

    Conventions:
        - `fit` sets `self.fitted_ = True` (through `_mark_fitted`) and returns `self`.
        - `sample(n, *, seed=None)` draws from `self.make_generator(seed)`.
        - Sequence models set `is_sequence_model = True` and take `length=` in `sample`.
        - Models whose `fit` trains one model on all ranks' shards under `torch.distributed`
          (sharded EM, data-parallel gradient fits) set `distributed_fit = True`.
    """

    log_prob_kind: LogProbKind = LogProbKind.EXACT
    is_sequence_model: ClassVar[bool] = False
    distributed_fit: ClassVar[bool] = False
    fitted_attributes: ClassVar[tuple[str, ...]] = ("history_", "n_iter_", "converged_")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_model_class(cls)

    def __init__(self) -> None:
        super().__init__()
        self.fitted_ = False
        self.event_shape = torch.Size()

    # ---- configuration -------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, so that `type(self)(**config)` rebuilds the unfitted shell.

        Derived from the constructor's signature, as scikit-learn's `get_params` is: each
        argument is read back from the attribute of the same name. A class whose constructor
        keeps an argument under another name (or needs a JSON form) overrides this.

        Raises:
            NotImplementedError: an argument has no attribute of its name.
        """
        config: dict[str, Any] = {}
        for name in _constructor_arguments(type(self)):
            if not hasattr(self, name):
                raise NotImplementedError(
                    f"{type(self).__name__} keeps no attribute {name!r} for its constructor "
                    "argument of that name; store it or override get_config()"
                )
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return config

    # ---- scikit-learn estimator interface ------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (scikit-learn's estimator API; `deep` is ignored).

        With `set_params` and `score` this lets `sklearn.base.clone`, `GridSearchCV` and
        `cross_val_score` work on probgen models.
        """
        return self.get_config()

    def set_params(self, **params: Any) -> Model:
        """Rebuild this model, unfitted, with `params` replacing constructor arguments.

        Raises:
            DataError: a name is not a constructor argument.
        """
        allowed = _constructor_arguments(type(self))
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise DataError(
                f"{type(self).__name__}.set_params: unknown argument(s) {', '.join(unknown)}; "
                f"the constructor takes {', '.join(allowed)}"
            )
        config = {**self.get_config(), **params}
        device = self.device
        type(self).__init__(self, **config)
        self.to(device)
        return self

    def score(self, data: Any, y: Any = None) -> float:
        """Mean `log_prob` per example of `data` (scikit-learn's "higher is better" score).

        It is what `log_prob` is: exact, a lower bound or an estimate, by `log_prob_kind`;
        compare scores only between models whose kinds allow it. `y` is ignored.

        Raises:
            NoDensityError: the model has no density (`log_prob_kind` is ``"none"``).
        """
        return float(torch.as_tensor(self.log_prob(data)).double().mean())

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's estimator tags (asked of every estimator since scikit-learn 1.6).

        A probgen model is an unsupervised density estimator; its input is checked by the
        model itself (sequence models take lists of arrays), not by scikit-learn.
        """
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            no_validation=True,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """Build an unfitted model from `get_config()`'s output."""
        return cls(**config)

    def get_fitted_state(self) -> dict[str, Any]:
        """JSON-serialisable fitted values other than tensors (saved next to the tensors)."""
        state: dict[str, Any] = {"fitted_": bool(self.fitted_)}
        for name in self.fitted_attributes:
            if hasattr(self, name):
                state[name] = _to_json(getattr(self, name))
        return state

    def set_fitted_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_fitted_state` returned (older history shapes are converted)."""
        for name, value in state.items():
            if name == "history_":
                value = history_records(value)
            setattr(self, name, value)

    def get_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors to save; by default the state dict."""
        return dict(self.state_dict())

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by `get_tensors`; by default a strict `load_state_dict`."""
        reference = self.state_dict()
        for name, value in tensors.items():
            if name in reference and (
                reference[name].shape != value.shape or reference[name].dtype != value.dtype
            ):
                # Lazily sized buffers (set by fit) and float64 models are matched before loading.
                _resize_entry(self, name, value)
        self.load_state_dict(tensors, strict=True)

    # ---- fitting state -------------------------------------------------------------------
    def _mark_fitted(self) -> None:
        self.fitted_ = True

    def check_fitted(self, method: str = "this method") -> None:
        """Raise `NotFittedError` unless `fit` has run (or fitted values were loaded)."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet; call fit(data) before {method}"
            )

    # ---- device, dtype, randomness ---------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters and buffers (CPU when it has none)."""
        for tensor in self._all_tensors():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters and buffers (float32 when it has none)."""
        for tensor in self._all_tensors():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def _all_tensors(self):
        yield from self.parameters()
        yield from self.buffers()

    def make_generator(self, seed: int | torch.Generator | None = None) -> torch.Generator:
        """A `torch.Generator` on the model's device: seeded when `seed` is given, else fresh."""
        if isinstance(seed, torch.Generator):
            return seed
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            if not isinstance(seed, (int,)) or isinstance(seed, bool):
                raise DataError(f"seed must be an int, a torch.Generator or None, got {seed!r}")
            if not -(2**63) <= seed < 2**64:  # torch's seed range; beyond it torch overflows
                raise DataError(f"seed must lie in [-2**63, 2**64), got {seed!r}")
            generator.manual_seed(int(seed))
        return generator

    # ---- contract defaults -----------------------------------------------------------------
    def log_prob(self, x: Any) -> torch.Tensor:  # pragma: no cover - overridden
        raise NoDensityError(f"{type(self).__name__} does not define log_prob")

    def save(self, path: str | Path) -> None:
        """Write the model to `path` atomically (safetensors tensors + JSON config)."""
        from probgen.core.io import save_model

        save_model(self, path)

    def extra_repr(self) -> str:
        try:
            return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            return ""


def history_records(history: Any) -> list[dict[str, Any]]:
    """`history_` in its one shape: a list with one dict of figures per iteration or epoch.

    Files written before that shape was shared hold a list of numbers (one log-likelihood per
    EM iteration), a dict of equally long lists (one per figure), or a dict of such dicts per
    layer; each is converted here.

    Example:
        >>> history_records([-3.0, -2.5])
        [{'iteration': 1, 'log_likelihood': -3.0}, {'iteration': 2, 'log_likelihood': -2.5}]
        >>> history_records({"epoch": [1, 2], "seconds": [0.1, 0.2]})
        [{'epoch': 1, 'seconds': 0.1}, {'epoch': 2, 'seconds': 0.2}]
    """
    if history is None:
        return []
    if isinstance(history, dict):
        if all(isinstance(v, (dict, list)) and not isinstance(v, list) for v in history.values()):
            layered: list[dict[str, Any]] = []
            for layer, (_, layer_history) in enumerate(history.items()):
                layered += [{"layer": layer, **r} for r in history_records(layer_history)]
            return layered
        length = max((len(v) for v in history.values() if isinstance(v, list)), default=0)
        return [
            {k: v[i] for k, v in history.items() if isinstance(v, list) and i < len(v)}
            for i in range(length)
        ]
    records: list[dict[str, Any]] = []
    for index, entry in enumerate(history):
        if isinstance(entry, dict):
            records.append(dict(entry))
        else:
            records.append({"iteration": index + 1, "log_likelihood": entry})
    return records


_CONSTRUCTOR_ARGUMENTS: dict[type, tuple[str, ...]] = {}


def _constructor_arguments(cls: type) -> tuple[str, ...]:
    # A dict rather than functools.cache: mypy cannot see that classes are hashable when their
    # instances (nn.Modules) define __hash__.
    cached = _CONSTRUCTOR_ARGUMENTS.get(cls)
    if cached is None:
        skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        signature = inspect.signature(cls.__init__)  # type: ignore[misc]
        cached = _CONSTRUCTOR_ARGUMENTS[cls] = tuple(
            name for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind not in skip
        )
    return cached


@contextlib.contextmanager
def seeded_initialisation(seed: int | None) -> Iterator[None]:
    """Build layers with initial weights drawn from `seed`, leaving the global RNG as it was.

    With `seed=None` the layers draw from the global random state, as torch layers do.

    Example:
        >>> with seeded_initialisation(0):
        ...     first = torch.nn.Linear(2, 2).weight
        >>> with seeded_initialisation(0):
        ...     second = torch.nn.Linear(2, 2).weight
        >>> torch.equal(first, second)
        True
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


def _resize_entry(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    current = getattr(owner, leaf)
    replacement = torch.empty_like(value, device=current.device)
    if isinstance(current, nn.Parameter):
        setattr(owner, leaf, nn.Parameter(replacement, requires_grad=current.requires_grad))
    else:
        owner._buffers[leaf] = replacement


def _to_json(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    json.dumps(value)  # fail early on something JSON cannot hold
    return value
