"""Boltzmann machines: `RBM`, fully connected `BoltzmannMachine`, and stacked `DBN`.

This module gathers the family's public classes; each lives in its own module
(`probgen.graphical.rbm`, `probgen.graphical.boltzmann_machine`, `probgen.graphical.dbn`).

Example:
    >>> import probgen
    >>> rbm = probgen.RBM(784, 500)
    >>> rbm.log_prob_kind.value  # 500 hidden units: log Z by AIS, so log_prob is an estimate
    'estimate'
"""

from __future__ import annotations

from probgen.graphical._boltzmann_common import LogPartition
from probgen.graphical.boltzmann_machine import BoltzmannMachine
from probgen.graphical.dbn import DBN
from probgen.graphical.rbm import RBM

__all__ = ["RBM", "BoltzmannMachine", "DBN", "LogPartition"]
