"""Evaluation metrics for generative models."""
