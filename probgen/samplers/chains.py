"""`sample_chains`: one entry point for every sampler, returning `Samples`.

Targets: a probgen Density, a plain log-density function of a tensor (with `initial=` or
`support=` / `event_shape=`), or a Pyro model with `model_args` / `model_kwargs` (constrained
sites are sampled in unconstrained space with the log-Jacobian). Methods:

- ``"mh"``: random-walk Metropolis-Hastings vectorised over chains, with warmup adaptation of
  the step size and of the proposal covariance from the chains' pooled history;
  ``proposal="independence"`` switches to independence proposals after warmup; discrete
  coordinates get flip / categorical proposals.
- ``"gibbs"``: the target's own `gibbs_step` when it has one; otherwise exact coordinate-wise
  updates of discrete coordinates (by enumerating each coordinate's values) combined with MH
  (``continuous="mh"``, one block per Pyro site) or NUTS (``continuous="nuts"``) for the
  continuous ones.
- ``"nuts"`` / ``"hmc"``: Pyro's kernels through `potential_fn`, one per chain.
- ``"svi"``: a Pyro autoguide fitted by SVI; draws come from the fitted guide.

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

import inspect
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probgen.core.data import check_choice, check_positive_int
from probgen.core.errors import DataError
from probgen.samplers.gibbs import EnumerationKernel, run_model_gibbs
from probgen.samplers.mh import (
    DiscreteKernel,
    IndependenceKernel,
    RandomWalkKernel,
    covariance_window_ends,
)
from probgen.samplers.nuts import KERNEL_OPTIONS as NUTS_OPTIONS
from probgen.samplers.recording import DrawRecorder, kept_sweeps
from probgen.samplers.samples import Samples
from probgen.samplers.targets import FlatTarget, make_target

__all__ = ["METHODS", "Samples", "sample_chains"]

METHODS = ("mh", "gibbs", "nuts", "hmc", "svi")

MH_OPTIONS = {
    "proposal",
    "step_size",
    "target_accept",
    "adapt_covariance",
    "dense",
    "discrete_steps",
    "proposal_distribution",
    "independence_scale",
    "restart_stragglers",
}
GIBBS_OPTIONS = MH_OPTIONS | {"evidence", "continuous", "nuts_options", "compute_lp"}
SVI_OPTIONS = {"guide", "num_steps", "learning_rate", "num_particles"}

_METHOD_OPTIONS = {
    "mh": MH_OPTIONS,
    "gibbs": GIBBS_OPTIONS,
    "nuts": NUTS_OPTIONS,
    "hmc": NUTS_OPTIONS,
    "svi": SVI_OPTIONS,
}


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
) -> Samples:
    """Draw `num_samples` draws from each of `num_chains` chains after `warmup` steps.

    Args:
        target: a probgen Density, a log-density function of a tensor (num_chains,
            *event_shape) -> (num_chains,), or a Pyro model.
        method: "mh", "gibbs", "nuts", "hmc" or "svi".
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
        thin: keep every `thin`-th draw.
        progress: show a tqdm progress bar.
        checkpoint: file to which finished draws are written every `flush_every` draws and on
            interruption (Ctrl-C), so an interrupted run leaves readable `Samples`.
        flush_every: draws between checkpoint writes (default a tenth of the run).
        **options: method settings. mh: proposal ("random_walk" | "independence"), step_size,
            target_accept, adapt_covariance, dense, discrete_steps, proposal_distribution,
            independence_scale, restart_stragglers (default True: during warmup, chains
            stuck far below the others restart from copies of other chains). gibbs:
            evidence, continuous ("mh" | "nuts"), nuts_options, compute_lp, and the mh
            settings. nuts/hmc: Pyro kernel settings (step_size,
            target_accept_prob, max_tree_depth, full_mass, num_steps, ...). svi: guide
            ("multivariate" | "diagonal" | "lowrank"), num_steps, learning_rate, num_particles.

    Returns:
        `Samples` with arrays (chain, draw, ...) per parameter and ArviZ-named statistics.

    Raises:
        DataError: unknown method or option, zero chains or draws, a target returning NaN or
            +inf, a Pyro site the method cannot handle.
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
    attrs = {
        "method": method,
        "num_chains": num_chains,
        "num_samples": num_samples,
        "warmup": warmup,
        "seed": int(seed),
        "thin": thin,
        "options": {k: v for k, v in options.items() if _jsonable(v)},
    }
    bar = tqdm(disable=not progress, desc=method, mininterval=0.5, leave=False)
    started = time.perf_counter()
    try:
        if method == "gibbs" and hasattr(target, "gibbs_step"):
            samples = _model_gibbs(
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
            runner = {
                "mh": _run_mh,
                "gibbs": _run_gibbs,
                "nuts": _run_nuts,
                "hmc": _run_nuts,
                "svi": _run_svi,
            }[method]
            z0, lp0 = _initial_points(flat, num_chains, generator, initial is not None)
            stat_names = ("lp", "acceptance_rate", "step_size")
            if method in ("nuts", "hmc"):
                stat_names += ("diverging",)
            recorder = DrawRecorder(
                flat,
                num_chains,
                num_samples,
                stat_names,
                attrs=attrs,
                checkpoint=checkpoint,
                flush_every=flush_every,
            )
            run = _SamplerRun(
                flat, recorder, z0, lp0, generator, warmup, thin, int(seed), bar, method
            )
            try:
                runner(run, **options)
            except KeyboardInterrupt:
                recorder.flush()
                raise
            samples = recorder.to_samples()
    finally:
        bar.close()
    samples.attrs["sampling_time"] = time.perf_counter() - started
    if checkpoint is not None:
        samples.save(checkpoint)
    return samples


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


@dataclass
class _SamplerRun:
    """What each runner (`_run_mh`, `_run_gibbs`, `_run_nuts`, `_run_svi`) works with.

    The flat target, the recorder of kept draws, the chains' starting points `z` (num_chains,
    dim) and their log densities `lp`, the run's generator and settings, and the progress bar.
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

    def sweeps(self) -> Iterator[tuple[int, int | None]]:
        """(sweep, kept draw index or None) over the whole run, advancing the progress bar."""
        self.bar.reset(total=self.warmup + self.recorder.num_samples * self.thin)
        return kept_sweeps(self.warmup, self.recorder.num_samples, self.thin, self.bar)


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


def _run_mh(run: _SamplerRun, **options: Any) -> None:
    proposal = check_choice(
        options.get("proposal", "random_walk"), "proposal", ("random_walk", "independence")
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
    restart = bool(options.get("restart_stragglers", True)) and z.shape[0] >= 4
    restart_points = {int(0.1 * warmup)} | covariance_window_ends(warmup)
    restarts = 0
    for iteration, draw in run.sweeps():
        if iteration == warmup and proposal == "independence" and walkers:
            independence = _independence_kernel(walkers[0], history, z, options)
        accepts = []
        for walker in walkers:
            kernel = independence if independence is not None else walker
            z, lp, accept = kernel.step(z, lp, target.log_density, generator)
            if iteration < warmup:
                walker.adapt(iteration, warmup, z, accept)
                if proposal == "independence" and iteration >= warmup // 2:
                    history.append(z.clone())
            accepts.append(accept)
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
def _run_gibbs(run: _SamplerRun, **options: Any) -> None:
    continuous_method = check_choice(options.get("continuous", "mh"), "continuous", ("mh", "nuts"))
    target, z, lp, generator, warmup = run.target, run.z, run.lp, run.generator, run.warmup
    discrete = target.discrete_index
    enumerator = None
    if discrete.numel():
        enumerator = EnumerationKernel(discrete, target.cardinality[discrete], target.low[discrete])
    walkers = _continuous_kernels(target, True, options)
    nuts_chains = None
    if continuous_method == "nuts" and target.continuous_index.numel():
        from probgen.samplers.nuts import PyroKernelChains

        nuts_chains = PyroKernelChains(
            target,
            "nuts",
            z,
            warmup=warmup,
            seed=run.seed,
            index=target.continuous_index,
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
            nuts_chains.set_state(z)
            z, stats = nuts_chains.step()
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


def _model_gibbs(
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
        function = getattr(model, "unnormalized_log_prob", None) or model.log_prob
        try:
            with torch.no_grad():
                given = {"evidence": evidence} if _takes_evidence(function, evidence) else {}
                value = function(state, **given)
                return torch.as_tensor(value).reshape(num_chains).double().cpu()
        except Exception:
            compute_lp = False  # the model has no cheap density of its full state
            return None

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


def _run_nuts(run: _SamplerRun, **options: Any) -> None:
    from probgen.samplers.nuts import PyroKernelChains

    _discrete_error(run.target, run.method)
    chains = PyroKernelChains(
        run.target, run.method, run.z, warmup=run.warmup, seed=run.seed, **options
    )
    for _, draw in run.sweeps():
        z, stats = chains.step()
        if draw is not None:
            run.recorder.record(draw, z, **stats)


def _run_svi(run: _SamplerRun, **options: Any) -> None:
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
