"""Class-conditional image GAN: samples carry the class asked for, judged by the in-repo
digits classifier (slow: about 20-40 s of training on the CPU)."""

from __future__ import annotations

import pytest
import torch
from probgen.recipes import gan_digits

from probgen.metrics.features import load_feature_classifier


@pytest.mark.slow
def test_conditional_dcgan_samples_are_classified_as_their_labels():
    images, labels = gan_digits.data("train", labels=True)
    classifier = load_feature_classifier("digits")
    assert (classifier.predict(images) == labels).float().mean() > 0.98
    gan = gan_digits.build(n_classes=10, n_epochs=40)
    gan.fit(images, labels=labels)
    asked = torch.arange(500) % 10
    predicted = classifier.predict(gan.sample(500, labels=asked, seed=1))
    # a generator that ignored its labels would score about 0.1; 30 epochs reached 0.85
    assert (predicted == asked).float().mean() > 0.8
    # and every class is produced on request (no class collapsed onto another)
    per_class = torch.stack([(predicted[asked == k] == k).float().mean() for k in range(10)])
    assert per_class.min() > 0.4, per_class
