"""Interoperability of a `BayesianNetwork`: pgmpy models, BIF files, Markov networks.

Example:
    >>> import probgen
    >>> asia = probgen.BayesianNetwork.from_example("asia")
    >>> asia.to_pgmpy().get_cpds("lung").variables
    ['lung', 'smoke']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np

import probgen.networks.bif as bif_format
from probgen.core.errors import DataError


class InteropMixin:
    """Conversions of `BayesianNetwork` to and from pgmpy, BIF and `MarkovNetwork` (a mixin)."""

    @classmethod
    def from_pgmpy(cls, model: Any) -> Self:
        """Build from a pgmpy `DiscreteBayesianNetwork` (its CPDs and state names).

        Raises:
            DataError: the model has a variable without a CPD.
        """
        variables = [str(v) for v in model.nodes()]
        parents: dict[str, list[str]] = {}
        states: dict[str, list[str]] = {}
        tables: dict[str, np.ndarray] = {}
        for variable in model.nodes():
            cpd = model.get_cpds(variable)
            if cpd is None:
                raise DataError(f"model: variable {variable!r} has no CPD")
            given = [str(p) for p in cpd.variables[1:]]
            parents[str(variable)] = given
            for name in cpd.variables:
                states[str(name)] = [str(s) for s in cpd.state_names[name]]
            tables[str(variable)] = np.moveaxis(np.asarray(cpd.values, dtype=np.float64), 0, -1)
        return cls(parents=parents, tables=tables, states=states, variables=variables)

    def to_pgmpy(self) -> Any:
        """The network as a pgmpy `DiscreteBayesianNetwork` with `TabularCPD`s."""
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        self.check_fitted("to_pgmpy")
        model = DiscreteBayesianNetwork(self.edges)
        model.add_nodes_from(self.variables)
        cpds = []
        for variable in self.variables:
            given = self.parents[variable]
            values = self.table(variable).detach().cpu().numpy()
            card = values.shape[-1]
            values = np.moveaxis(values, -1, 0).reshape(card, -1)
            names = {v: list(self._states_of(v)) for v in [variable, *given]}
            cpds.append(
                TabularCPD(
                    variable,
                    card,
                    values,
                    evidence=given or None,
                    evidence_card=[len(self._states_of(p)) for p in given] or None,
                    state_names=names,
                )
            )
        model.add_cpds(*cpds)
        return model

    @classmethod
    def read_bif(cls, path: str | Path) -> Self:
        """Read a BIF file (`.bif` or `.bif.gz`)."""
        parsed = bif_format.read_bif_file(path)
        return cls(
            parents=parsed.parents,
            tables=parsed.tables,
            states=parsed.states,
            variables=parsed.variables,
            name=parsed.name,
        )

    @classmethod
    def from_example(cls, name: str) -> Self:
        """A bnlearn network bundled inside pgmpy ("asia", "alarm", "hepar2", ...), offline."""
        return cls.read_bif(bif_format.pgmpy_example_path(name))

    def write_bif(self, path: str | Path) -> None:
        """Write the network as BIF text (gzip-compressed when `path` ends in `.gz`)."""
        self.check_fitted("write_bif")
        text = bif_format.format_bif(
            self.name,
            self.variables,
            {v: self._states_of(v) for v in self.variables},
            self.parents,
            {v: self.table(v).detach().cpu().numpy() for v in self.variables},
        )
        path = Path(path)
        if not path.parent.exists():
            raise DataError(f"path: folder {str(path.parent)!r} does not exist")
        data = text.encode("utf-8")
        if path.suffix == ".gz":
            import gzip

            data = gzip.compress(data)
        path.write_bytes(data)

    def to_markov(self) -> Any:
        """The moralised network as a `MarkovNetwork` (one factor per table, Z = 1)."""
        from probgen.networks.markovnet import MarkovNetwork

        self.check_fitted("to_markov")
        factors = [([*self.parents[v], v], self.table(v)) for v in self.variables]
        return MarkovNetwork(
            factors,
            states={v: self._states_of(v) for v in self.variables},
            variables=self.variables,
        )
