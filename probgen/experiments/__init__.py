"""Bayesian inference experiments run from a config."""
