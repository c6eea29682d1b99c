"""The per-method sampler loops behind `sample_chains`.

`RUNNERS` maps each method ("mh", "gibbs", "nuts", "hmc", "chees", "svi") to a function that takes a
`SamplerRun` (the flat target, the recorder of kept draws, the chains' starting points, the
run's generator and settings) and the method's options, and fills the recorder.
`sample_model_gibbs` runs a model's own `gibbs_step` instead. `sample_chains`
(`probgen.samplers.chains`) checks the arguments and builds the run.

Example:
    >>> import torch
    >>> from tqdm.auto import tqdm
    >>> from probgen.samplers.recording import DrawRecorder
    >>> from probgen.samplers.targets import make_target
    >>> target = make_target(lambda x: -0.5 * (x**2).sum(-1), initial=torch.zeros(2))
    >>> recorder = DrawRecorder(target, 8, 50, ("lp", "acceptance_rate", "step_size"))
    >>> generator = torch.Generator().manual_seed(0)
    >>> z = torch.zeros(8, 2, dtype=target.dtype)
    >>> run = SamplerRun(target, recorder, z, target.log_density(z), generator,
    ...                  warmup=50, thin=1, seed=0, bar=tqdm(disable=True), method="mh")
    >>> RUNNERS["mh"](run)
    >>> recorder.to_samples()["x"].shape
    (8, 50, 2)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probgen.core.data import check_choice
from probgen.core.errors import DataError, NoDensityError, ProbgenError
from probgen.samplers.gibbs import EnumerationKernel, run_model_gibbs
from probgen.samplers.mh import (
    DiscreteKernel,
    IndependenceKernel,
    MultivariateStudentT,
    RandomWalkKernel,
    covariance_window_ends,
)
from probgen.samplers.recording import DrawRecorder, kept_sweeps
from probgen.samplers.samples import Samples
from probgen.samplers.split import ChainSplit, gather_recorded
from probgen.samplers.targets import FlatTarget

__all__ = [
    "LP_UNAVAILABLE",
    "RUNNERS",
    "SamplerRun",
    "pooled_student_t_kernel",
    "restart_stragglers",
    "sample_model_gibbs",
]

LP_UNAVAILABLE = (NoDensityError, NotImplementedError, ProbgenError, TypeError)
"""Errors from a model's log density that mean "no density of this state": `sample_model_gibbs`
then records no ``lp`` (saying why in ``attrs["lp_unavailable"]``); any other error surfaces."""


@dataclass
class SamplerRun:
    """What each runner in `RUNNERS` works with.

    The flat target, the recorder of kept draws, the chains' starting points `z` (num_chains,
    dim) and their log densities `lp`, the run's generator and settings, and the progress bar.
    In a distributed run (`probgen.samplers.split`), `split` says which block of chains this
    rank runs, `target` splits each batch of rows over the ranks (no gradient flows through
    it) and `rank_target` is the plain target for this rank's own chains; only rank 0's
    `recorder` keeps draws.
    """

    target: FlatTarget
    recorder: DrawRecorder
    z: torch.Tensor
    lp: torch.Tensor
    generator: torch.Generator
    warmup: int
    thin: int
    seed: int
    bar: Any
    method: str
    split: ChainSplit | None = None
    rank_target: FlatTarget | None = None

    @property
    def chains(self) -> ChainSplit:
        """The chains this rank runs (all of them in one process)."""
        return self.split or ChainSplit(self.z.shape[0])

    @property
    def own_target(self) -> FlatTarget:
        """The target evaluated on this rank's chains only (gradients flow through it)."""
        return self.rank_target or self.target

    def sweeps(self) -> Iterator[tuple[int, int | None]]:
        """(sweep, kept draw index or None) over the whole run, advancing the progress bar."""
        self.bar.reset(total=self.warmup + self.recorder.num_samples * self.thin)
        return kept_sweeps(self.warmup, self.recorder.num_samples, self.thin, self.bar)


# ---------------------------------------------------------------------------------------------
# Metropolis-Hastings
# ---------------------------------------------------------------------------------------------
def _continuous_kernels(
    target: FlatTarget, per_block: bool, options: dict[str, Any]
) -> list[RandomWalkKernel]:
    continuous = target.continuous_index
    if continuous.numel() == 0:
        return []
    blocks = [continuous]
    if per_block:
        blocks = [b for b in target.blocks if not bool(target.discrete_mask[b].any())]
    return [
        RandomWalkKernel(
            block,
            dtype=target.dtype,
            device=target.device,
            step_size=options.get("step_size"),
            target_accept=options.get("target_accept"),
            adapt_covariance=options.get("adapt_covariance", True),
            dense=options.get("dense", True),
        )
        for block in blocks
    ]


def _run_mh(run: SamplerRun, **options: Any) -> None:
    proposal = check_choice(
        options.get("proposal", "mixed"), "proposal", ("mixed", "random_walk", "independence")
    )
    target, z, lp, generator, warmup = run.target, run.z, run.lp, run.generator, run.warmup
    walkers = _continuous_kernels(target, False, options)
    discrete = target.discrete_index
    flipper = None
    if discrete.numel():
        flipper = DiscreteKernel(discrete, target.cardinality[discrete], target.low[discrete])
    discrete_steps = int(options.get("discrete_steps", max(1, discrete.numel())))
    history: list[torch.Tensor] = []
    independence = None
    companion = None
    restart = bool(options.get("restart_stragglers", True)) and z.shape[0] >= 4
    restart_points = {int(0.1 * warmup)} | covariance_window_ends(warmup)
    # "mixed" adds, from the last covariance window on, an independence step whose Student-t
    # proposal is fitted to every chain's pooled warm-up draws: one proposal that reaches the
    # whole posterior decorrelates each short chain far faster than local random-walk steps.
    mixed_points = {max(covariance_window_ends(warmup), default=warmup), warmup}
    # Keep at most about 20,000 pooled warm-up states: plenty for a covariance, bounded memory.
    stride = max(1, math.ceil(z.shape[0] * max(warmup - warmup // 2, 1) / 20_000))
    if proposal == "independence":
        stride = 1
    companion_accept: list[float] = []
    restarts = 0
    for iteration, draw in run.sweeps():
        if iteration == warmup and proposal == "independence" and walkers:
            independence = _independence_kernel(walkers[0], history, z, options)
        if proposal == "mixed" and walkers and iteration in mixed_points:
            # Drop the companion where it hardly ever accepts (high dimensions, odd shapes):
            # it would only double the cost of each sweep.
            useless = bool(companion_accept) and float(np.mean(companion_accept)) < 0.02
            companion = None
            if not useless:
                companion = pooled_student_t_kernel(walkers[0], history or [z], options)
            run.recorder.attrs["mh_independence_steps"] = companion is not None
        accepts = []
        for walker in walkers:
            kernel = independence if independence is not None else walker
            z, lp, accept = kernel.step(z, lp, target.log_density, generator)
            if iteration < warmup:
                walker.adapt(iteration, warmup, z, accept)
                if (
                    proposal != "random_walk"
                    and iteration >= warmup // 2
                    and (iteration - warmup // 2) % stride == 0
                ):
                    history.append(z.clone())
            accepts.append(accept)
        if companion is not None:
            z, lp, accept = companion.step(z, lp, target.log_density, generator)
            accepts.append(accept)
            if iteration < warmup:
                companion_accept.append(float(accept.mean()))
        if flipper is not None:
            for _ in range(discrete_steps):
                z, lp, accept = flipper.step(z, lp, target.log_density, generator)
                accepts.append(accept)
        if restart and iteration + 1 in restart_points:
            z, lp, moved = restart_stragglers(z, lp, generator)
            restarts += moved
            run.recorder.attrs["warmup_restarts"] = restarts
        if draw is not None:
            run.recorder.record(
                draw,
                z,
                lp=lp,
                acceptance_rate=torch.stack(accepts).mean(0),
                step_size=np.full(z.shape[0], walkers[0].step_size if walkers else np.nan),
            )


def pooled_student_t_kernel(
    walker: RandomWalkKernel, history: list[torch.Tensor], options: dict[str, Any]
) -> IndependenceKernel | None:
    """Independence kernel proposing from a Student-t fitted to all chains' pooled draws.

    `history` holds (num_chains, dim) states from warmup; the t's location and scale matrix are
    the pooled mean and (shrunk) covariance times ``independence_scale**2`` (default 1), with
    ``independence_df`` (default 5) degrees of freedom. None when the covariance is singular
    or rests on fewer than 2 (dim + 1) states.
    """
    pooled = torch.cat(history)
    if pooled.shape[0] < 2 * (walker.size + 1):
        return None
    mean, covariance = walker.fitted_gaussian(pooled)
    scale = float(options.get("independence_scale", 1.0))
    try:
        proposal = MultivariateStudentT(
            mean, covariance * scale**2, df=int(options.get("independence_df", 5))
        )
    except torch.linalg.LinAlgError:
        return None
    return IndependenceKernel(walker.index, proposal)


def restart_stragglers(
    z: torch.Tensor, lp: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """During warmup, move chains stuck far below the others onto copies of other chains.

    A chain counts as stuck when its log density lies further below the chains' median than a
    draw from a Gaussian posterior practically ever does (half the 1 - 1e-6 chi-square quantile
    in `dim` dimensions, plus 5): such chains sit in a minor mode or have not found the mass
    yet. Warmup states only choose where sampling starts, so this does not bias the draws.

    Returns:
        (z, lp, number of chains moved).
    """
    from scipy.stats import chi2

    threshold = 0.5 * float(chi2.ppf(1 - 1e-6, z.shape[1])) + 5.0
    median = torch.nan_to_num(lp, nan=-math.inf).median()
    stuck = ~(lp >= median - threshold)
    good = torch.nonzero(~stuck).flatten()
    count = int(stuck.sum())
    if count == 0 or good.numel() == 0:
        return z, lp, 0
    donors = good[torch.randint(0, good.numel(), (count,), generator=generator, device=z.device)]
    z = z.clone()
    lp = lp.clone()
    z[stuck] = z[donors]
    lp[stuck] = lp[donors]
    return z, lp, count


def _independence_kernel(
    walker: RandomWalkKernel, history: list[torch.Tensor], z: torch.Tensor, options: dict
) -> IndependenceKernel:
    given = options.get("proposal_distribution")
    if given is not None:
        return IndependenceKernel(walker.index, given)
    pooled = torch.cat(history) if history else z
    mean, covariance = walker.fitted_gaussian(pooled)
    scale = float(options.get("independence_scale", 1.5))
    gaussian = torch.distributions.MultivariateNormal(mean, covariance * scale**2)
    return IndependenceKernel(walker.index, gaussian)


# ---------------------------------------------------------------------------------------------
# Gibbs
# ---------------------------------------------------------------------------------------------
def _run_gibbs(run: SamplerRun, **options: Any) -> None:
    continuous_method = check_choice(options.get("continuous", "mh"), "continuous", ("mh", "nuts"))
    target, z, lp, generator, warmup = run.target, run.z, run.lp, run.generator, run.warmup
    discrete = target.discrete_index
    enumerator = None
    if discrete.numel():
        enumerator = EnumerationKernel(discrete, target.cardinality[discrete], target.low[discrete])
    walkers = _continuous_kernels(target, True, options)
    nuts_chains = None
    chains = run.chains  # NUTS runs this rank's chains; the discrete sweeps see all of them
    if continuous_method == "nuts" and target.continuous_index.numel():
        from probgen.samplers.nuts import PyroKernelChains

        nuts_chains = PyroKernelChains(
            run.own_target,
            "nuts",
            chains.local(z),
            warmup=warmup,
            seed=run.seed,
            index=target.continuous_index,
            first_chain=chains.rows.start,
            **dict(options.get("nuts_options", {})),
        )
        walkers = []
    for iteration, draw in run.sweeps():
        accepts = []
        step_size = np.nan
        if enumerator is not None:
            z, lp = enumerator.sweep(z, lp, target.log_density, generator)
        for walker in walkers:
            z, lp, accept = walker.step(z, lp, target.log_density, generator)
            if iteration < warmup:
                walker.adapt(iteration, warmup, z, accept)
            accepts.append(accept)
            step_size = walker.step_size
        if nuts_chains is not None:
            nuts_chains.set_state(chains.local(z))
            z, stats = nuts_chains.step()
            z = chains.gather(z)
            stats = {name: chains.gather(value) for name, value in stats.items()}
            lp = stats["lp"].to(z.dtype)
            accepts.append(stats["acceptance_rate"].to(z.dtype))
            step_size = stats["step_size"].numpy()
        if draw is not None:
            acceptance = torch.stack(accepts).mean(0) if accepts else torch.ones(z.shape[0])
            run.recorder.record(
                draw,
                z,
                lp=lp,
                acceptance_rate=acceptance,
                step_size=np.broadcast_to(step_size, (z.shape[0],)),
            )


def _takes_evidence(function: Any, evidence: Any) -> bool:
    """Whether to pass the Gibbs run's evidence to the model's log density."""
    if evidence is None:
        return False
    try:
        return "evidence" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def sample_model_gibbs(
    model: Any,
    num_chains: int,
    num_samples: int,
    warmup: int,
    seed: int,
    thin: int,
    initial: Any,
    attrs: dict[str, Any],
    bar: Any,
    options: dict[str, Any],
    checkpoint: Any,
    flush_every: Any,
) -> Samples:
    allowed = {"evidence", "compute_lp"}
    extra = set(options) - allowed
    if extra:
        raise DataError(
            f"option(s) {sorted(extra)} do not apply to {type(model).__name__}.gibbs_step; "
            f"known: {sorted(allowed)}"
        )
    device = getattr(model, "device", torch.device("cpu"))
    generator = torch.Generator(device=device).manual_seed(seed)
    evidence = options.get("evidence")
    compute_lp = bool(options.get("compute_lp", True))
    draws: list[dict[str, torch.Tensor]] = []
    log_probs: list[torch.Tensor] = []
    every = flush_every or max(1, num_samples // 10)

    def as_named(state: Any) -> dict[str, torch.Tensor]:
        if isinstance(state, dict):
            return {str(k): torch.as_tensor(v) for k, v in state.items()}
        if isinstance(state, (tuple, list)):
            return {f"x{i}": torch.as_tensor(v) for i, v in enumerate(state)}
        return {"x": torch.as_tensor(state)}

    def log_density(state: Any) -> torch.Tensor | None:
        nonlocal compute_lp
        if not compute_lp:
            return None
        function = getattr(model, "unnormalized_log_prob", None) or getattr(
            model, "log_prob", None
        )
        if function is None:
            compute_lp = False
            attrs["lp_unavailable"] = f"{type(model).__name__} has no log_prob"
            return None
        try:
            with torch.no_grad():
                given = {"evidence": evidence} if _takes_evidence(function, evidence) else {}
                value = torch.as_tensor(function(state, **given))
        except LP_UNAVAILABLE as error:
            # The model has no density of its full chain state (e.g. only of part of it): the
            # draws stay valid, only the lp statistic is left out. Anything else is a bug.
            compute_lp = False
            attrs["lp_unavailable"] = f"{type(error).__name__}: {error}"
            return None
        if value.numel() != num_chains:
            raise DataError(
                f"{type(model).__name__}.{function.__name__} returned shape "
                f"{tuple(value.shape)} for {num_chains} chains; expected one value per chain"
            )
        return value.reshape(num_chains).double().cpu()

    def build(count: int, complete: bool) -> Samples:
        names = draws[0].keys()
        stacked = {
            n: torch.stack([d[n] for d in draws[:count]], dim=1).double().cpu().numpy()
            for n in names
        }
        stats = {}
        if log_probs and len(log_probs) >= count:
            stats["lp"] = torch.stack(log_probs[:count], dim=1).numpy()
        stats["acceptance_rate"] = np.ones((num_chains, count))
        return Samples(stacked, stats, {**attrs, "sampler": "gibbs_step", "complete": complete})

    def on_draw(index: int, state: Any) -> None:
        named = as_named(state)
        for key, value in named.items():
            if value.shape[:1] != (num_chains,):
                raise DataError(
                    f"{type(model).__name__}.gibbs_step returned {key} of shape "
                    f"{tuple(value.shape)}; expected a leading dimension of {num_chains} chains"
                )
        draws.append({k: v.detach().clone() for k, v in named.items()})
        value = log_density(state)
        if value is not None:
            log_probs.append(value)
        if checkpoint is not None and (index + 1) % every == 0 and index + 1 < num_samples:
            build(index + 1, False).save(checkpoint)

    bar.reset(total=warmup + num_samples * thin)
    try:
        run_model_gibbs(
            model,
            num_chains=num_chains,
            num_samples=num_samples,
            warmup=warmup,
            generator=generator,
            evidence=evidence,
            initial=initial,
            thin=thin,
            on_draw=on_draw,
            progress=bar,
        )
    except KeyboardInterrupt:
        if checkpoint is not None and draws:
            build(len(draws), False).save(checkpoint)
        raise
    return build(len(draws), True)


# ---------------------------------------------------------------------------------------------
# NUTS / HMC and SVI
# ---------------------------------------------------------------------------------------------
def _discrete_error(target: FlatTarget, method: str) -> None:
    if not bool(target.discrete_mask.any()):
        return
    names = []
    if target.pyro_density is not None:
        names = [site.name for site in target.pyro_density.sites if site.discrete]
    what = f"discrete site(s) {names}" if names else "discrete coordinates"
    raise DataError(
        f"method {method!r} cannot move {what}; use method='gibbs' (exact updates of the "
        "discrete sites with MH or NUTS, continuous='nuts', for the continuous ones) or 'mh'"
    )


def _run_nuts(run: SamplerRun, **options: Any) -> None:
    from probgen.samplers.nuts import PyroKernelChains

    _discrete_error(run.target, run.method)
    split = run.chains
    recorder = run.recorder
    if split.distributed:  # this rank's block of chains; rank 0 gathers them at the end
        names = ("lp", "acceptance_rate", "step_size", "diverging")
        recorder = DrawRecorder(run.own_target, len(split.rows), recorder.num_samples, names)
    chains = PyroKernelChains(
        run.own_target,
        run.method,
        split.local(run.z),
        warmup=run.warmup,
        seed=run.seed,
        first_chain=split.rows.start,
        **options,
    )
    for _, draw in run.sweeps():
        z, stats = chains.step()
        if draw is not None:
            recorder.record(draw, z, **stats)
    if split.distributed:
        gather_recorded(recorder, run.recorder, names)


def _run_chees(run: SamplerRun, **options: Any) -> None:
    from probgen.samplers.chees import run_chees

    _discrete_error(run.target, run.method)
    run_chees(run, restart=restart_stragglers, **options)


def _run_svi(run: SamplerRun, **options: Any) -> None:
    from probgen.samplers.svi import fit_guide_and_draw

    target, recorder = run.target, run.recorder
    _discrete_error(target, run.method)
    count = recorder.num_chains * recorder.num_samples
    run.bar.reset(total=int(options.get("num_steps", 2000)))
    draws, info = fit_guide_and_draw(
        target, count, seed=run.seed, initial=run.z[0], progress=run.bar, **options
    )
    draws = draws.reshape(recorder.num_chains, recorder.num_samples, target.dim)
    with torch.no_grad():
        lps = target.log_density(draws.reshape(count, -1)).reshape(recorder.num_chains, -1)
    for index in range(recorder.num_samples):
        recorder.record(
            index,
            draws[:, index],
            lp=lps[:, index],
            acceptance_rate=np.ones(recorder.num_chains),
            step_size=np.full(recorder.num_chains, math.nan),
        )
    recorder.attrs["final_loss"] = info["final_loss"]
    recorder.attrs["loss_history"] = info["loss_history"][
        :: max(1, len(info["loss_history"]) // 200)
    ]


RUNNERS: dict[str, Callable[..., None]] = {
    "mh": _run_mh,
    "gibbs": _run_gibbs,
    "nuts": _run_nuts,
    "hmc": _run_nuts,
    "chees": _run_chees,
    "svi": _run_svi,
}
