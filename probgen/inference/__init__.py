"""Deprecated: each module moved into its family (`probgen.hmm.inference`,
`probgen.networks.factors`, `probgen.boltzmann.ais`, `probgen.mixture.inference`)."""
