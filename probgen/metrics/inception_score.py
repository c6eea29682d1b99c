"""An Inception-Score-style score computed with an in-repo classifier (Salimans et al. 2016).

IS = exp(E_x KL(p(y | x) || p(y))), with p(y | x) the classifier's class probabilities for a
sample x and p(y) their mean over the samples. It is high (up to the number of classes) when
each sample is classified confidently and the classes are used evenly; it says nothing about
whether samples resemble the data (a generator of one perfect image per class scores the
maximum), so read it beside FID/KID and precision/recall. As usual the samples are shuffled and
cut into `splits` groups, and the mean and standard deviation over groups are reported; with
the same seed and classifier this equals torchmetrics' `InceptionScore(feature=classifier)`.

Example:
    >>> import torch
    >>> from probgen.metrics.inception_score import inception_score
    >>> confident = torch.eye(10).repeat(20, 1) * 50  # logits: every class, sharply
    >>> round(float(inception_score(confident, classifier=None, splits=1).mean), 4)
    10.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from probgen.core.data import as_tensor
from probgen.core.errors import DataError

__all__ = ["inception_score", "InceptionScore"]


class InceptionScore(NamedTuple):
    """Mean and (sample) standard deviation of the score over the splits."""

    mean: torch.Tensor
    std: torch.Tensor


def inception_score(
    samples: Any,
    *,
    classifier: str | Callable[[torch.Tensor], torch.Tensor] | None = "mnist",
    splits: int = 10,
    seed: int | None = 0,
    batch_size: int = 1000,
) -> InceptionScore:
    """The Inception-Score-style score of `samples` under an in-repo classifier.

    Args:
        samples: generated images (n, ...) in the classifier's input format, or, with
            ``classifier=None``, class logits (n, n_classes) already computed.
        classifier: ``"digits"`` or ``"mnist"`` (loaded with `load_feature_classifier`), or any
            callable from a batch to class logits, or None (samples are logits).
        splits: groups the shuffled samples are cut into (at least 1, at most n).
        seed: seed of the shuffle (None: torch's global generator, as torchmetrics).
        batch_size: images classified at once.

    Returns:
        `InceptionScore(mean, std)` of 0-d float64 tensors (std is nan for one split).

    Raises:
        DataError: empty or NaN samples, images the classifier does not take, bad `splits`.
    """
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise DataError(f"splits must be a positive integer, got {splits!r}")
    values = as_tensor(samples, "samples")
    if isinstance(classifier, str):
        from probgen.metrics.features import load_feature_classifier

        classifier = load_feature_classifier(classifier)
    if classifier is None:
        logits = values
    else:
        with torch.no_grad():
            logits = torch.cat(
                [
                    torch.as_tensor(classifier(values[start : start + batch_size]))
                    for start in range(0, values.shape[0], batch_size)
                ]
            )
    logits = logits.detach().to(torch.float64)
    if logits.dim() != 2:
        raise DataError(f"the logits must have shape (n, n_classes), got {tuple(logits.shape)}")
    if splits > logits.shape[0]:
        raise DataError(f"splits = {splits} is more than the {logits.shape[0]} samples")
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    logits = logits[torch.randperm(logits.shape[0], generator=generator)]
    scores = []
    for group in logits.chunk(splits, dim=0):
        log_p = group.log_softmax(1)
        log_marginal = log_p.exp().mean(0, keepdim=True).log()
        kl = (log_p.exp() * (log_p - log_marginal)).sum(1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    spread = values.std() if len(values) > 1 else torch.tensor(math.nan, dtype=torch.float64)
    return InceptionScore(values.mean(), spread)
