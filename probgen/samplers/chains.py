"""`sample_chains`: one entry point for every sampler, returning `Samples`.

Targets: a probgen Density, a plain log-density function of a tensor (with `initial=` or
`support=` / `event_shape=`), or a Pyro model with `model_args` / `model_kwargs` (constrained
sites are sampled in unconstrained space with the log-Jacobian). Methods:

- ``"mh"``: random-walk Metropolis-Hastings vectorised over chains, with warmup adaptation of
  the step size and of the proposal covariance from the chains' pooled history. By default
  (``proposal="mixed"``) each sweep from the last covariance window on adds an independence
  step from a Student-t fitted to all chains' pooled warmup draws (dropped when it hardly ever
  accepts), so many short chains mix fast; ``"random_walk"`` leaves it out and
  ``"independence"`` replaces the walk by Gaussian independence proposals after warmup;
  discrete coordinates get flip / categorical proposals.
- ``"gibbs"``: the target's own `gibbs_step` when it has one; otherwise exact coordinate-wise
  updates of discrete coordinates (by enumerating each coordinate's values) combined with MH
  (``continuous="mh"``, one block per Pyro site) or NUTS (``continuous="nuts"``) for the
  continuous ones.
- ``"nuts"`` / ``"hmc"``: Pyro's kernels through `potential_fn`, one per chain.
- ``"chees"``: ChEES-HMC (`probgen.samplers.chees`): HMC on every chain at once (one batched
  gradient per leapfrog step), with step size, jittered trajectory length and a diagonal mass
  matrix adapted jointly across chains; divergences in the ``diverging`` statistic.
- ``"svi"``: a Pyro autoguide fitted by SVI; draws come from the fitted guide.

Under `torch.distributed` (`probgen.distributed.is_distributed()`, e.g. `torchrun`) every rank
calls `sample_chains` with the same arguments; the chains are split over the ranks and rank 0
gets one `Samples` of all chains, equal to the single-process run with the same seed (see
`probgen.samplers.split`); the other ranks get None. To run independent samplers on separate
ranks instead, call it inside `probgen.distributed.single_process()`.

Example:
    >>> import torch
    >>> from probgen.samplers.chains import sample_chains
    >>> log_density = lambda x: torch.distributions.Normal(1.0, 2.0).log_prob(x).sum(-1)
    >>> samples = sample_chains(log_density, "mh", num_chains=64, num_samples=300, warmup=300,
    ...                         seed=0, initial=torch.zeros(1), progress=False)
    >>> samples["x"].shape
    (64, 300, 1)
    >>> round(float(samples["x"].mean()), 1), round(float(samples["x"].std()), 1)
    (1.0, 2.0)
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probgen.core.data import check_choice, check_positive_int
from probgen.core.distributed import single_process
from probgen.core.errors import DataError
from probgen.core.progress import progress_bar
from probgen.core.threads import small_op_loop
from probgen.samplers.chees import CHEES_OPTIONS
from probgen.samplers.nuts import KERNEL_OPTIONS as NUTS_OPTIONS
from probgen.samplers.recording import DrawRecorder
from probgen.samplers.runners import RUNNERS, SamplerRun, sample_model_gibbs
from probgen.samplers.samples import Samples
from probgen.samplers.split import ChainSplit, DiscardedDraws
from probgen.samplers.targets import FlatTarget, make_target

__all__ = ["METHODS", "Samples", "sample_chains"]

METHODS = ("mh", "gibbs", "nuts", "hmc", "chees", "svi")

# Whether a distributed "chees" run splits its chains (through a target that gathers each
# rank's log densities and gradients: `ChainSplit.shard_target(differentiable=True)`). Off
# until ChEES's rewrite is checked to reach the target only through autograd on rows; off, a
# distributed "chees" run raises DataError.
SPLIT_CHEES = True

MH_OPTIONS = {
    "proposal",
    "step_size",
    "target_accept",
    "adapt_covariance",
    "dense",
    "discrete_steps",
    "proposal_distribution",
    "independence_scale",
    "independence_df",
    "restart_stragglers",
}
GIBBS_OPTIONS = MH_OPTIONS | {"evidence", "continuous", "nuts_options", "compute_lp"}
SVI_OPTIONS = {"guide", "num_steps", "learning_rate", "num_particles"}

_METHOD_OPTIONS = {
    "mh": MH_OPTIONS,
    "gibbs": GIBBS_OPTIONS,
    "nuts": NUTS_OPTIONS,
    "hmc": NUTS_OPTIONS,
    "chees": CHEES_OPTIONS,
    "svi": SVI_OPTIONS,
}


@small_op_loop()
def sample_chains(
    target: Any,
    method: str = "nuts",
    num_chains: int = 4,
    num_samples: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    *,
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
    initial: Any = None,
    support: Any = None,
    event_shape: Any = None,
    cardinalities: Any = None,
    name: str | None = None,
    thin: int = 1,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    flush_every: int | None = None,
    **options: Any,
) -> Samples | None:
    """Draw `num_samples` draws from each of `num_chains` chains after `warmup` steps.

    Under `torch.distributed` (more than one rank), every rank calls this with the same
    arguments: "mh", "gibbs", "nuts", "hmc" and "chees" split the chains over the ranks (contiguous
    blocks; at least one chain per rank) and return all chains' `Samples` on rank 0 and None
    on the others, with the draws of the single-process run with the same seed (up to the
    rounding of the target on smaller batches). "svi" and a model's own `gibbs_step` cannot
    split: they run whole on rank 0 (the others return None at once) with a `UserWarning`.
    ("chees" evaluates the target and its gradient on each rank's block of chains, gathered
    for the whole run, so its pooled adaptation sees every chain as in one process.)

    Args:
        target: a probgen Density, a log-density function of a tensor (num_chains,
            *event_shape) -> (num_chains,), or a Pyro model.
        method: "mh", "gibbs", "nuts", "hmc", "chees" or "svi".
        num_chains: number of chains (MH and Gibbs run them as one batch).
        num_samples: kept draws per chain.
        warmup: adaptation steps per chain, discarded (for "svi": ignored; see num_steps).
        seed: the run's seed; same seed, same draws.
        model_args, model_kwargs: arguments of a Pyro model.
        initial: starting value: a tensor of the event shape (or one row per chain) for
            densities and functions, a dict of constrained site values for Pyro models.
            Default: Uniform(-2, 2) in unconstrained space, like Stan.
        support: torch constraint of a density's or function's values (default real).
        event_shape: shape of a function's argument when `initial` is not given.
        cardinalities: number of values per coordinate of a discrete density or function.
        name: parameter name of a density's or function's draws (default "x").
        thin: keep every `thin`-th draw (`num_samples` counts the kept draws, so a run makes
            `warmup + num_samples * thin` sweeps).
        progress: show a tqdm progress bar.
        checkpoint: file to which finished draws are written every `flush_every` draws and on
            interruption (Ctrl-C), so an interrupted run leaves readable `Samples`.
        flush_every: draws between checkpoint writes (default a tenth of the run).
        **options: method settings. mh: proposal ("mixed" (default) | "random_walk" |
            "independence"), step_size, target_accept, adapt_covariance, dense,
            discrete_steps, proposal_distribution, independence_scale (widening of the fitted
            proposal: default 1 for "mixed", 1.5 for "independence"), independence_df
            (degrees of freedom of the "mixed" Student-t, default 5), restart_stragglers
            (default True: during warmup, chains stuck far below the others restart from
            copies of other chains). gibbs:
            evidence, continuous ("mh" | "nuts"), nuts_options, compute_lp, and the mh
            settings. nuts/hmc: Pyro kernel settings (step_size,
            target_accept_prob, max_tree_depth, full_mass, num_steps, ...). chees: step_size
            (initial; default found by Stan's heuristic), target_accept (harmonic mean
            acceptance, default 0.651), trajectory_length (initial), learning_rate (Adam on
            log trajectory length, 0.025), max_leapfrog_steps (1000), jitter (Halton, True),
            divergence_threshold (1000), adapt_step_size, adapt_trajectory_length,
            adapt_mass_matrix, restart_stragglers (all True), criterion ("chees_rate",
            the default, | "chees"). svi: guide
            ("multivariate" | "diagonal" | "lowrank"), num_steps, learning_rate, num_particles.

    Returns:
        `Samples` with arrays (chain, draw, ...) per parameter and ArviZ-named statistics
        (None on ranks other than 0 of a distributed run).

    Raises:
        DataError: unknown method or option, zero chains or draws, a target returning NaN or
            +inf, a Pyro site the method cannot handle; in a distributed run, fewer chains
            than ranks or method "chees".
    """
    method = check_choice(method, "method", METHODS)
    num_chains = check_positive_int(num_chains, "num_chains")
    num_samples = check_positive_int(num_samples, "num_samples")
    warmup = check_positive_int(warmup, "warmup", minimum=0)
    thin = check_positive_int(thin, "thin")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an int, got {seed!r}")
    unknown = set(options) - _METHOD_OPTIONS[method]
    if unknown:
        raise DataError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; known: "
            f"{sorted(_METHOD_OPTIONS[method])}"
        )
    split = ChainSplit.current(num_chains)
    if split.distributed:
        whole = method == "svi" or (method == "gibbs" and hasattr(target, "gibbs_step"))
        _check_distributed(method, split, whole)
        if whole:
            if split.rank != 0:
                return None
            with single_process():
                return sample_chains(
                    target,
                    method,
                    num_chains,
                    num_samples,
                    warmup,
                    seed,
                    model_args=model_args,
                    model_kwargs=model_kwargs,
                    initial=initial,
                    support=support,
                    event_shape=event_shape,
                    cardinalities=cardinalities,
                    name=name,
                    thin=thin,
                    progress=progress,
                    checkpoint=checkpoint,
                    flush_every=flush_every,
                    **options,
                )
    attrs = {
        "method": method,
        "num_chains": num_chains,
        "num_samples": num_samples,
        "warmup": warmup,
        "seed": int(seed),
        "thin": thin,
        "options": {k: v for k, v in options.items() if _jsonable(v)},
    }
    if split.distributed:
        attrs["ranks"] = split.world
    bar = progress_bar(None, method, progress and split.rank == 0, mininterval=0.5)
    started = time.perf_counter()
    try:
        if method == "gibbs" and hasattr(target, "gibbs_step"):
            samples = sample_model_gibbs(
                target,
                num_chains,
                num_samples,
                warmup,
                int(seed),
                thin,
                initial,
                attrs,
                bar,
                options,
                checkpoint,
                flush_every,
            )
        else:
            flat = make_target(
                target,
                initial=initial,
                support=support,
                event_shape=event_shape,
                cardinalities=cardinalities,
                model_args=model_args,
                model_kwargs=model_kwargs,
                name=name,
            )
            recorder = None
            generator = torch.Generator(device=flat.device).manual_seed(int(seed))
            runner = RUNNERS[method]
            rank_target = flat
            if method in ("mh", "gibbs"):  # every rank runs all chains but its rows of target
                flat = split.shard_target(flat)
            elif method == "chees":  # the same, with gradients gathered too
                flat = split.shard_target(flat, differentiable=True)
            z0, lp0 = _initial_points(flat, num_chains, generator, initial is not None)
            stat_names = ("lp", "acceptance_rate", "step_size")
            if method in ("nuts", "hmc", "chees"):
                stat_names += ("diverging",)
            if method == "chees":
                stat_names += ("n_steps",)
            if split.rank == 0:
                recorder = DrawRecorder(
                    flat,
                    num_chains,
                    num_samples,
                    stat_names,
                    attrs=attrs,
                    checkpoint=checkpoint,
                    flush_every=flush_every,
                )
            else:  # rank 0 keeps every chain's draws
                recorder = DiscardedDraws(flat, num_chains, num_samples)
            run = SamplerRun(
                flat,
                recorder,
                z0,
                lp0,
                generator,
                warmup,
                thin,
                int(seed),
                bar,
                method,
                split=split if split.distributed else None,
                rank_target=rank_target if split.distributed else None,
            )
            try:
                runner(run, **options)
            except KeyboardInterrupt:
                recorder.flush()
                raise
            if split.rank != 0:
                return None
            samples = recorder.to_samples()
    finally:
        bar.close()
    samples.attrs["sampling_time"] = time.perf_counter() - started
    if checkpoint is not None:
        samples.save(checkpoint)
    return samples


def _check_distributed(method: str, split: ChainSplit, whole: bool) -> None:
    """Refuse what a distributed run cannot split exactly; warn where it runs on rank 0."""
    if method == "chees" and not SPLIT_CHEES:
        raise DataError(
            "method 'chees' does not split its chains over the ranks of a distributed run yet "
            "(its step size, trajectory length and mass matrix pool every chain's statistics); "
            "call sample_chains inside probgen.distributed.single_process(), or use 'nuts', "
            "'hmc' or 'mh'"
        )
    if whole:
        warnings.warn(
            f"sample_chains({method!r}) cannot split its work over the ranks of a distributed "
            "run: it runs whole on rank 0 and returns None on the other ranks",
            UserWarning,
            stacklevel=3,
        )
    elif split.num_chains < split.world:
        raise DataError(
            f"num_chains={split.num_chains} is fewer than the {split.world} ranks of this "
            "distributed run; give at least one chain per rank, or call sample_chains inside "
            "probgen.distributed.single_process()"
        )


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _initial_points(
    target: FlatTarget,
    num_chains: int,
    generator: torch.Generator,
    given: bool,
    attempts: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting points with finite log density (redrawing random ones, as Stan does)."""
    z = target.initial_fn(num_chains, generator).to(target.dtype)
    lp = target.check_initial(z)
    for _ in range(attempts if not given else 0):
        bad = ~torch.isfinite(lp)
        if not bad.any():
            break
        fresh = target.initial_fn(num_chains, generator).to(target.dtype)
        z = torch.where(bad[:, None], fresh, z)
        lp = target.check_initial(z)
    if not torch.isfinite(lp).all():
        chain = int((~torch.isfinite(lp)).nonzero()[0])
        raise DataError(
            f"the target's log density is -inf at the starting point of chain {chain}"
            + ("" if given else f" after {attempts} random draws")
            + "; give initial= inside the support"
        )
    return z, lp
