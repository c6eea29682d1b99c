"""Boltzmann machines: `RBM`, fully connected `BoltzmannMachine`, and stacked `DBN`.

This module gathers the family's public classes; each lives in its own module
(`probgen.boltzmann.rbm`, `probgen.boltzmann.machine`, `probgen.boltzmann.dbn`).

Example:
    >>> import probgen
    >>> rbm = probgen.RBM(784, 500)
    >>> rbm.log_prob_kind.value  # 500 hidden units: log Z by AIS, so log_prob is an estimate
    'estimate'
"""

from __future__ import annotations

from probgen.boltzmann.common import LogPartition
from probgen.boltzmann.dbn import DBN
from probgen.boltzmann.machine import BoltzmannMachine
from probgen.boltzmann.rbm import RBM

__all__ = ["RBM", "BoltzmannMachine", "DBN", "LogPartition"]
