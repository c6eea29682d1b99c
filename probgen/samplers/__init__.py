"""MCMC samplers vectorised over chains, and their diagnostics."""
