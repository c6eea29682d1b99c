"""MCMC convergence diagnostics with ArviZ's definitions, vectorised over parameters.

Every function takes draws shaped (chain, draw) or (chain, draw, *shape) and returns one value
per parameter element (shape `shape`). The definitions follow Vehtari et al. (2021),
"Rank-normalization, folding, and localization", exactly as ArviZ 0.x computes them:

- `rhat`: rank-normalised split R-hat, the larger of the bulk and the folded (tail) value;
- `ess_bulk`: ESS of the rank-normalised split chains;
- `ess_tail`: the smaller ESS of the 5% and 95% quantile indicators (split chains);
- `ess_mean`: ESS of the raw split chains, which `mcse_mean` uses;
- `mcse_mean`: sd / sqrt(ess_mean).

Example:
    >>> import numpy as np
    >>> from probgen.samplers.diagnostics import ess_bulk, rhat
    >>> draws = np.random.default_rng(0).normal(size=(4, 500))
    >>> bool(rhat(draws) < 1.01), bool(ess_bulk(draws) > 1000)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import stats
from scipy.fft import next_fast_len

QUANTILES = (0.05, 0.5, 0.95)


def _as_draws(draws: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Reshape (chain, draw, *shape) to (n_params, chain, draw) float64."""
    array = np.asarray(draws, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim < 2:
        raise ValueError(f"draws must have shape (chain, draw, ...), got {array.shape}")
    shape = array.shape[2:]
    flat = array.reshape(array.shape[0], array.shape[1], -1)
    return np.moveaxis(flat, -1, 0), shape


def _split_chains(draws: np.ndarray) -> np.ndarray:
    """(n, chain, draw) -> (n, 2 * chain, draw // 2): first and last halves as chains."""
    half = draws.shape[-1] // 2
    return np.concatenate([draws[..., :half], draws[..., draws.shape[-1] - half :]], axis=-2)


def _z_scale(draws: np.ndarray) -> np.ndarray:
    """Rank-normalise each parameter's pooled draws (Blom's offset 3/8)."""
    n_params = draws.shape[0]
    flat = draws.reshape(n_params, -1)
    ranks = stats.rankdata(flat, method="average", axis=1)
    size = flat.shape[1]
    return stats.norm.ppf((ranks - 3 / 8) / (size - 2 * 3 / 8 + 1)).reshape(draws.shape)


def _autocov(draws: np.ndarray) -> np.ndarray:
    """Autocovariance along the last axis by FFT (biased, divided by the length)."""
    n_draw = draws.shape[-1]
    padded = next_fast_len(2 * n_draw)
    centred = draws - draws.mean(axis=-1, keepdims=True)
    spectrum = np.fft.rfft(centred, n=padded, axis=-1)
    spectrum *= np.conjugate(spectrum)
    return np.fft.irfft(spectrum, n=padded, axis=-1)[..., :n_draw] / n_draw


def _rhat_basic(draws: np.ndarray) -> np.ndarray:
    """Classic R-hat of (n, chain, draw) draws."""
    n_draw = draws.shape[-1]
    chain_mean = draws.mean(axis=-1)
    chain_var = draws.var(axis=-1, ddof=1)
    between = n_draw * chain_mean.var(axis=-1, ddof=1)
    within = chain_var.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n_draw - 1) / n_draw)


def _ess_basic(draws: np.ndarray) -> np.ndarray:
    """ESS of (n, chain, draw) draws with Geyer's initial monotone sequence (ArviZ's `_ess`)."""
    n_params, n_chain, n_draw = draws.shape
    result = np.empty(n_params)
    acov = _autocov(draws)
    chain_mean = draws.mean(axis=-1)
    for index in range(n_params):
        ary = draws[index]
        if np.isnan(ary).any():
            result[index] = np.nan
            continue
        if ary.max() - ary.min() < np.finfo(float).resolution:
            result[index] = ary.size
            continue
        cov = acov[index]
        mean_var = cov[:, 0].mean() * n_draw / (n_draw - 1.0)
        var_plus = mean_var * (n_draw - 1.0) / n_draw
        if n_chain > 1:
            var_plus += chain_mean[index].var(ddof=1)
        mean_cov = cov.mean(axis=0)
        rho = np.zeros(n_draw)
        rho_even = 1.0
        rho[0] = rho_even
        rho_odd = 1.0 - (mean_var - mean_cov[1]) / var_plus
        rho[1] = rho_odd
        t = 1
        while t < (n_draw - 3) and (rho_even + rho_odd) > 0.0:
            rho_even = 1.0 - (mean_var - mean_cov[t + 1]) / var_plus
            rho_odd = 1.0 - (mean_var - mean_cov[t + 2]) / var_plus
            if (rho_even + rho_odd) >= 0:
                rho[t + 1] = rho_even
                rho[t + 2] = rho_odd
            t += 2
        max_t = t - 2
        if rho_even > 0:
            rho[max_t + 1] = rho_even
        t = 1
        while t <= max_t - 2:
            if (rho[t + 1] + rho[t + 2]) > (rho[t - 1] + rho[t]):
                rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
                rho[t + 2] = rho[t + 1]
            t += 2
        total = n_chain * n_draw
        tau = -1.0 + 2.0 * rho[: max_t + 1].sum() + rho[max_t + 1 : max_t + 2].sum()
        tau = max(tau, 1 / np.log10(total))
        result[index] = np.nan if np.isnan(rho).any() else total / tau
    return result


def _enough(draws: np.ndarray, min_chains: int) -> bool:
    return draws.shape[-1] >= 4 and draws.shape[-2] >= min_chains


def rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat (max of bulk and tail), as `arviz.rhat(method="rank")`.

    Args:
        draws: array (chain, draw, *shape).

    Returns:
        Array of shape `shape` (a float for scalar parameters); NaN with fewer than 2 chains
        or 4 draws.
    """
    flat, shape = _as_draws(draws)
    if not _enough(flat, 2):
        return _shaped(np.full(flat.shape[0], np.nan), shape)
    split = _split_chains(flat)
    bulk = _rhat_basic(_z_scale(split))
    median = np.median(split.reshape(split.shape[0], -1), axis=1)[:, None, None]
    tail = _rhat_basic(_z_scale(np.abs(split - median)))
    values = np.maximum(bulk, tail)
    values[np.isnan(flat).any(axis=(1, 2))] = np.nan
    return _shaped(values, shape)


def ess_bulk(draws: np.ndarray) -> np.ndarray:
    """Bulk effective sample size, as `arviz.ess(method="bulk")`."""
    flat, shape = _as_draws(draws)
    if not _enough(flat, 1):
        return _shaped(np.full(flat.shape[0], np.nan), shape)
    return _shaped(_ess_basic(_z_scale(_split_chains(flat))), shape)


def _quantile_ess(flat: np.ndarray, prob: float) -> np.ndarray:
    cut = np.quantile(flat.reshape(flat.shape[0], -1), prob, axis=1)[:, None, None]
    return _ess_basic(_split_chains((flat <= cut).astype(np.float64)))


def ess_tail(draws: np.ndarray, prob: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """Tail effective sample size (min over the 5% and 95% quantiles), as ArviZ's "tail"."""
    flat, shape = _as_draws(draws)
    if not _enough(flat, 1):
        return _shaped(np.full(flat.shape[0], np.nan), shape)
    low = _quantile_ess(flat, prob[0])
    high = _quantile_ess(flat, prob[1])
    return _shaped(np.minimum(low, high), shape)


def ess_mean(draws: np.ndarray) -> np.ndarray:
    """ESS for the mean (split chains, no rank normalisation), as `arviz.ess(method="mean")`."""
    flat, shape = _as_draws(draws)
    if not _enough(flat, 1):
        return _shaped(np.full(flat.shape[0], np.nan), shape)
    return _shaped(_ess_basic(_split_chains(flat)), shape)


def mcse_mean(draws: np.ndarray) -> np.ndarray:
    """Monte Carlo standard error of the mean, as `arviz.mcse(method="mean")`."""
    flat, shape = _as_draws(draws)
    if not _enough(flat, 1):
        return _shaped(np.full(flat.shape[0], np.nan), shape)
    sd = flat.reshape(flat.shape[0], -1).std(axis=1, ddof=1)
    return _shaped(sd / np.sqrt(_ess_basic(_split_chains(flat))), shape)


def _shaped(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return values.reshape(shape) if shape else np.float64(values[0])


def element_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """ArviZ-style labels of a parameter's elements: `theta[0]`, `beta[1, 2]`, or `mu`."""
    if not shape:
        return [name]
    return [f"{name}[{', '.join(map(str, index))}]" for index in np.ndindex(*shape)]


def summary_table(draws: Mapping[str, np.ndarray]):
    """Posterior summary of named draws as a pandas DataFrame, one row per element.

    Columns: mean, sd, q5, q50, q95, mcse_mean, ess_bulk, ess_tail, r_hat.

    Example:
        >>> import numpy as np
        >>> table = summary_table({"mu": np.zeros((2, 10)) + np.arange(10)})
        >>> list(table.columns)[:3]
        ['mean', 'sd', 'q5']
    """
    import pandas as pd

    rows: dict[str, dict[str, float]] = {}
    for name, values in draws.items():
        array = np.asarray(values, dtype=np.float64)
        shape = array.shape[2:]
        flat = array.reshape(array.shape[0] * array.shape[1], -1)
        quantiles = np.quantile(flat, QUANTILES, axis=0) if flat.shape[0] else None
        columns = {
            "mean": flat.mean(axis=0),
            "sd": flat.std(axis=0, ddof=1) if flat.shape[0] > 1 else np.full(flat.shape[1], np.nan),
            "q5": quantiles[0],
            "q50": quantiles[1],
            "q95": quantiles[2],
            "mcse_mean": np.ravel(mcse_mean(array)),
            "ess_bulk": np.ravel(ess_bulk(array)),
            "ess_tail": np.ravel(ess_tail(array)),
            "r_hat": np.ravel(rhat(array)),
        }
        for position, label in enumerate(element_names(name, shape)):
            rows[label] = {key: float(column[position]) for key, column in columns.items()}
    return pd.DataFrame.from_dict(rows, orient="index")
