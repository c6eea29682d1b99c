"""Sharded EM for HMMs: each rank holds whole sequences, every rank the same parameters.

Under `torch.distributed` (`probgen.core.distributed`), `HMM.fit` takes this rank's
sequences (a split by sequence: a sequence never spans two ranks) and runs the same EM as one
process on all ranks' sequences, concatenated in rank order:

- `agree_on_sizes`: a categorical model that infers `n_symbols` takes the largest symbol of
  any rank;
- `agree_on_seed`: without a seed, rank 0 draws one and every rank uses it;
- `initialize_emission`: the data-driven start of every emission family, equal to the
  single-process start on the concatenated sequences. Counts and moments are sums over the
  ranks; k-means clusters the same rows, in the same order, as a single process would (all
  observed steps, or the random subset of `SUBSET_SIZE` it draws beyond that), assembled by
  one sum over the ranks;
- `reduced_e_step`: the e-step's additive statistics and log-likelihood summed over the ranks
  (in their own dtype: float64 stays float64), so every rank runs the same m-step;
- `minibatch_e_step`: minibatch (stepwise) EM draws each minibatch from all ranks' sequences
  with the same generator on every rank; each rank runs the e-step on the ones it holds and
  the statistics are summed;
- `reduced_total`, `all_ranks`: a log-likelihood or a decision made the same on every rank.

Custom torch-distribution emissions (fitted by gradient) are refused by `check_supported`.

In one process every function is the plain computation (no collective is made).

Example:
    >>> import torch
    >>> from probgen.core.data import Sequences
    >>> from probgen.hmm.sequences import _Batch
    >>> batch = _Batch.of(Sequences(torch.zeros(2, 3, dtype=torch.long), torch.tensor([3, 2])))
    >>> observed_positions(batch).tolist()  # time-major order of the observed steps
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

from typing import Any

import torch

from probgen.core.data import Sequences
from probgen.core.distributed import (
    all_reduce_sum,
    broadcast_object,
    is_distributed,
    rank,
    shard_layout,
    world_size,
)
from probgen.core.errors import DataError
from probgen.core.kmeans import SUBSET_SIZE, kmeans
from probgen.fitting.em import EMResult
from probgen.hmm.emissions import (
    CategoricalEmission,
    Emission,
    GaussianComponents,
    GaussianEmission,
    GaussianMixtureEmission,
    MultinomialEmission,
    PoissonEmission,
)
from probgen.hmm.emissions.base import _normalize
from probgen.hmm.emissions.components import _floor_eigenvalues
from probgen.hmm.emissions.poisson import _RATE_FLOOR
from probgen.hmm.sequences import _Batch

__all__ = [
    "agree_on_seed",
    "agree_on_sizes",
    "all_ranks",
    "check_supported",
    "fit_counting",
    "initialize_emission",
    "minibatch_e_step",
    "observed_positions",
    "reduced_e_step",
    "reduced_total",
    "refuse_input_output",
    "sequence_layout",
    "summed_count",
]


# ---- agreement between ranks -----------------------------------------------------------------
def check_supported(model: Any, n_sequences: int) -> None:
    """Raise `DataError` for the fits that are not sharded (yet) or a rank without data."""
    if not is_distributed():
        return
    if not model._ensure_emission().supports_em:
        raise DataError(
            "custom torch-distribution emissions (gradient fits) are not supported under "
            "torch.distributed; fit them in one process"
        )
    sizes = torch.tensor([n_sequences, int(n_sequences == 0)], dtype=torch.int64)
    all_reduce_sum(sizes)
    if int(sizes[1]):
        raise DataError(
            f"{int(sizes[1])} rank(s) hold no sequence; give every rank at least one sequence"
        )


def refuse_input_output(model: Any, inputs: Any) -> None:
    """Raise `DataError` for an input-output HMM fit under `torch.distributed` (not sharded
    yet: each rank would fit its own sequences only)."""
    if is_distributed() and (getattr(model, "transition_inputs", 0) or inputs is not None):
        raise DataError(
            "input-output HMMs (transition_inputs > 0) are not sharded under "
            "torch.distributed yet; fit them in one process"
        )


def agree_on_sizes(model: Any, inferred: bool) -> None:
    """Give every rank the largest `n_symbols` any rank inferred from its sequences.

    Args:
        model: the HMM, after `_prepare` inferred its sizes from this rank's sequences.
        inferred: whether `n_symbols` was inferred (not given), on every rank alike.
    """
    if not inferred or model.family != "categorical" or not is_distributed():
        return
    largest = torch.zeros(world_size(), dtype=torch.int64)
    largest[rank()] = int(model.n_symbols)
    all_reduce_sum(largest)
    n_symbols = int(largest.max())
    if n_symbols != model.n_symbols:
        model.n_symbols = n_symbols
        model.emission = None  # rebuilt with the agreed size
        model._ensure_emission()


def agree_on_seed(seed: int | None) -> int | None:
    """`seed`, or without one a seed drawn on rank 0: the ranks' starts must be the same."""
    if seed is not None or not is_distributed():
        return seed
    drawn = int(torch.randint(2**62, (1,)).item())
    return int(broadcast_object(drawn))


def all_ranks(flag: bool) -> bool:
    """Whether `flag` holds on every rank (the same answer on every rank)."""
    if not is_distributed():
        return flag
    failing = torch.tensor([int(not flag)], dtype=torch.int64)
    all_reduce_sum(failing)
    return int(failing) == 0


def summed_count(count: int) -> int:
    """`count` summed over the ranks (e.g. the observed steps of all ranks' sequences)."""
    if not is_distributed():
        return count
    return int(all_reduce_sum(torch.tensor([count], dtype=torch.int64)))


def reduced_total(total: float, dtype: torch.dtype = torch.float64) -> float:
    """`total` summed over the ranks (a log-likelihood of this rank's sequences)."""
    if not is_distributed():
        return total
    value = torch.tensor([total], dtype=dtype)
    all_reduce_sum(value)
    return float(value)


def reduced_e_step(model: Any, batch: _Batch) -> tuple[dict[str, torch.Tensor], float]:
    """`model.e_step(batch)` with its statistics and total log-likelihood summed over the ranks.

    The total rides in the statistics' collective (one per dtype) as a 1-element tensor of the
    model's dtype, so a single process and a rank sum the same terms in the same precision.
    """
    statistics, log_likelihoods = model.e_step(batch)
    if not is_distributed():
        return statistics, float(log_likelihoods.sum())
    total = log_likelihoods.sum().reshape(1)
    all_reduce_sum([*statistics.values(), total])
    return statistics, float(total)


def fit_counting(model: Any, batch: _Batch) -> EMResult:
    """`model._fit_counting(batch)` (the closed-form fit of fully labelled sequences) on the
    label counts of all ranks: one m-step, then log p(x, z) of all ranks at the estimate."""
    if not is_distributed():
        return model._fit_counting(batch)
    statistics, _ = reduced_e_step(model, batch)
    model.m_step(statistics)
    _, total = reduced_e_step(model, batch)
    return EMResult(history=[total], converged=True)


def sequence_layout(n_local: int) -> tuple[int, int]:
    """(offset, total): where this rank's sequences start among all ranks', and their number."""
    return shard_layout(n_local) if is_distributed() else (0, n_local)


def minibatch_e_step(
    model: Any,
    data: Sequences,
    labels: torch.Tensor | None,
    index: torch.Tensor,
    offset: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """The e-step of minibatch EM on the sequences `index` of all ranks' (global numbers).

    Each rank takes the ones it holds (this rank's sequences start at `offset`); the
    statistics and log-likelihood are summed over the ranks. A rank holding none of them
    contributes zeros, shaped as the statistics of one of its sequences.
    """
    if is_distributed():
        local = index - offset
        local = local[(local >= 0) & (local < data.n_sequences)]
    else:
        local = index
    empty = local.numel() == 0
    if empty:
        local = index.new_zeros(1)
    part = data[local]
    known = None if labels is None else labels[local][:, : part.max_length]
    statistics, log_likelihoods = model.e_step(_Batch.of(part, known))
    total = log_likelihoods.sum().reshape(1)
    if empty:
        statistics = {key: torch.zeros_like(value) for key, value in statistics.items()}
        total = torch.zeros_like(total)
    if is_distributed():
        all_reduce_sum([*statistics.values(), total])
    return statistics, float(total)


# ---- where this rank's steps sit among all ranks' ----------------------------------------------
def observed_positions(batch: _Batch) -> torch.Tensor:
    """Index of each of this rank's observed steps (`batch.observed_values`) among the observed
    steps of all ranks' sequences in a single process's time-major order.

    A single process orders the observed steps by time, then by sequence (ranks in order), so
    a rank's steps are interleaved with the other ranks': the position of step t of a sequence
    is the number of steps before time t, plus the sequences of lower ranks alive at t, plus
    this rank's sequences before it alive at t. Only per-time counts travel between ranks.
    """
    mask = batch.mask_tm.cpu()  # (local max length, n_local)
    alive = mask.sum(1)  # this rank's sequences alive at each time
    if is_distributed():
        longest = torch.zeros(world_size(), dtype=torch.int64)
        longest[rank()] = alive.numel()
        max_length = int(all_reduce_sum(longest).max())
        counts = torch.zeros(world_size(), max_length, dtype=torch.int64)
        counts[rank(), : alive.numel()] = alive
        all_reduce_sum(counts)
        lower_ranks = counts[: rank()].sum(0)[: alive.numel()]
        per_time = counts.sum(0)
    else:
        lower_ranks = torch.zeros_like(alive)
        per_time = alive
    before_time = (per_time.cumsum(0) - per_time)[: alive.numel()]
    running = mask.to(torch.int64)
    before_sequence = running.cumsum(1) - running
    positions = (before_time + lower_ranks)[:, None] + before_sequence
    return positions[mask].to(batch.observed_values.device)


def _ordered_rows(
    rows: torch.Tensor, positions: torch.Tensor, n_total: int, generator: torch.Generator
) -> torch.Tensor:
    """The rows `kmeans` clusters in a single process, on every rank.

    `rows` are this rank's, at `positions` among all `n_total` rows. Beyond `SUBSET_SIZE` rows
    k-means keeps a random subset: it is drawn here, from the same generator in the same
    state, so `kmeans` then clusters exactly those rows and draws nothing more for the subset.
    """
    if n_total > SUBSET_SIZE:
        keep = torch.randperm(n_total, generator=generator, device=generator.device)[:SUBSET_SIZE]
        where = torch.full((n_total,), -1, dtype=torch.int64)
        where[keep.cpu()] = torch.arange(SUBSET_SIZE)
        slots = where.to(positions.device)[positions]
        mine = slots >= 0
        values = rows.new_zeros(SUBSET_SIZE, *rows.shape[1:])
        values[slots[mine]] = rows[mine]
    else:
        values = rows.new_zeros(n_total, *rows.shape[1:])
        values[positions] = rows
    return all_reduce_sum(values)  # each rank adds its rows, zeros elsewhere: exact


def _complete_rows(
    values: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's rows without NaN, their positions among all ranks' such rows, and their
    number on all ranks."""
    complete = ~torch.isnan(values).any(-1)
    flags = torch.zeros(_total_rows(positions), dtype=torch.int64, device=values.device)
    flags[positions[complete]] = 1
    all_reduce_sum(flags)
    index = flags.cumsum(0) - 1
    return values[complete], index[positions[complete]], int(flags.sum())


def _total_rows(positions: torch.Tensor) -> int:
    count = torch.tensor([positions.numel()], dtype=torch.int64)
    return int(all_reduce_sum(count))


# ---- the data-driven start of each emission family ---------------------------------------------
def initialize_emission(emission: Emission, batch: _Batch, generator: torch.Generator) -> None:
    """`emission.initialize(all ranks' observed values, generator)`, on this rank's values.

    Every rank ends with the start a single process makes on the concatenated sequences (up
    to the rounding of sums), and the generator in the same state as that process's.
    """
    if not is_distributed():
        emission.initialize(batch.observed_values, generator)
        return
    values = batch.observed_values
    if isinstance(emission, CategoricalEmission):
        codes = values.long().reshape(-1)
        frequencies = torch.bincount(codes[codes >= 0], minlength=emission.n_symbols)
        all_reduce_sum(frequencies)
        frequencies = frequencies.to(emission.probs) + 1.0
        noise = torch.rand(
            emission.n_states, emission.n_symbols, generator=generator, device=generator.device
        ).to(emission.probs)
        emission.probs = _normalize(frequencies * (0.25 + noise), emission.probs)
    elif isinstance(emission, MultinomialEmission):
        totals = all_reduce_sum(values.to(emission.probs.dtype).sum(0)) + 1.0
        noise = torch.rand(
            emission.n_states, emission.n_features, generator=generator, device=generator.device
        ).to(emission.probs)
        emission.probs = _normalize(totals * (0.25 + noise), emission.probs)
    elif isinstance(emission, PoissonEmission):
        _initialize_poisson(emission, values, observed_positions(batch), generator)
    elif isinstance(emission, (GaussianEmission, GaussianMixtureEmission)):
        positions = observed_positions(batch)
        complete, complete_positions, n_complete = _complete_rows(values, positions)
        n_needed = emission.n_states * getattr(emission, "n_mix", 1)
        if n_complete < n_needed:
            raise DataError(
                f"sequences have {n_complete} complete observations; need at least "
                f"{n_needed} to initialise {type(emission).__name__}"
            )
        _initialize_components(
            emission.components, complete, complete_positions, n_complete, generator
        )
        if isinstance(emission, GaussianMixtureEmission):
            emission.weights = torch.full_like(emission.weights, 1.0 / emission.n_mix)
    else:  # pragma: no cover - custom emissions are refused by check_supported
        raise DataError(f"{type(emission).__name__} has no sharded start")


def _initialize_poisson(
    emission: PoissonEmission,
    values: torch.Tensor,
    positions: torch.Tensor,
    generator: torch.Generator,
) -> None:
    data = values.to(emission.rates.dtype)
    missing = torch.isnan(data)
    # Missing counts take their feature's observed mean over all ranks (as one process).
    sums = torch.cat([data.nan_to_num(0.0).sum(0), (~missing).sum(0).to(data.dtype)])
    all_reduce_sum(sums)
    n_features = data.shape[-1]
    means = sums[:n_features] / sums[n_features:].clamp_min(1)
    data = torch.where(missing, means, data)
    n_total = _total_rows(positions)
    ordered = _ordered_rows(data, positions, n_total, generator)
    centres, _ = kmeans(ordered, emission.n_states, generator)
    mean = all_reduce_sum(data.sum(0)) / n_total
    emission.rates = (centres + 0.1 * mean.clamp_min(_RATE_FLOOR)).clamp_min(_RATE_FLOOR)


def _initialize_components(
    components: GaussianComponents,
    rows: torch.Tensor,
    positions: torch.Tensor,
    n_rows: int,
    generator: torch.Generator,
) -> None:
    """`GaussianComponents.initialize` on all ranks' complete rows: k-means centres as means,
    the pooled covariance of all rows for every component."""
    data = rows.to(components.means)
    center = all_reduce_sum(data.sum(0)) / n_rows
    components.center = center
    ordered = _ordered_rows(data, positions, n_rows, generator)
    centres, _ = kmeans(ordered, components.n_components, generator)
    components.means = centres
    centred = data - center
    if n_rows > 1:
        variance = all_reduce_sum(centred.square().sum(0)) / n_rows
    else:
        variance = torch.ones_like(center)
    floor = components.covariance_floor
    variance = variance + max(floor, 1e-3 * float(variance.mean()))
    variance = variance.clamp_min(max(floor, 1e-6))
    if components.covariance == "diag":
        components.covariance_storage = variance.expand(components.n_components, -1).clone()
    elif components.covariance == "spherical":
        components.covariance_storage = variance.mean().expand(components.n_components).clone()
    else:
        covariance = all_reduce_sum(centred.t() @ centred) / max(1, n_rows)
        covariance = covariance + torch.diag(
            torch.full_like(variance, max(floor, 1e-3 * float(variance.mean())))
        )
        covariance = _floor_eigenvalues(covariance, max(floor, 1e-6))
        if components.covariance == "full":
            covariance = covariance.expand(components.n_components, -1, -1).clone()
        elif components.tied_groups is not None:
            covariance = covariance.expand(components.tied_groups, -1, -1).clone()
        components.covariance_storage = covariance
