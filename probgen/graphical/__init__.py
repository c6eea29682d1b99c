"""Explicit-likelihood models: HMMs, Bayesian and Markov networks, Boltzmann machines."""
