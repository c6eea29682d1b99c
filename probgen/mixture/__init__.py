"""Gaussian mixtures: EM (full, diagonal, spherical) and the Bayesian mixture by blocked Gibbs.

Example:
    >>> from probgen.mixture import GaussianMixture
    >>> GaussianMixture(3).n_components
    3
"""

from __future__ import annotations

from probgen.mixture.model import GaussianMixture

__all__ = ["GaussianMixture"]
