"""On CUDA, the feature classifiers give the CPU's features, and the sample metrics take CUDA
tensors and give the CPU's figures.

Marker `gpu`: skipped without CUDA (tests/conftest.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from probgen.metrics import (
    kernel_distance,
    load_feature_classifier,
    precision_recall_density_coverage,
)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name, width", [("digits", 64), ("mnist", 784)])
def test_classifier_on_cuda_matches_cpu(name, width):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    images = torch.rand(256, width, generator=torch.Generator().manual_seed(0))
    cpu = load_feature_classifier(name)
    cuda = load_feature_classifier(name).to("cuda")
    # CPU input to a CUDA classifier is moved to its device.
    torch.testing.assert_close(
        cuda.features(images).cpu(), cpu.features(images), rtol=1e-4, atol=1e-4
    )
    assert torch.equal(cuda.predict(images.cuda()).cpu(), cpu.predict(images))


def test_metrics_take_cuda_tensors():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 8, generator=generator), torch.randn(250, 8, generator=generator)
    on_cpu = precision_recall_density_coverage(real, fake)
    on_cuda = precision_recall_density_coverage(real.cuda(), fake.cuda())
    assert on_cpu == on_cuda
    kid_cpu = kernel_distance(real, fake, subsets=5, subset_size=100)
    kid_cuda = kernel_distance(real.cuda(), fake.cuda(), subsets=5, subset_size=100)
    assert math.isclose(float(kid_cpu.mean), float(kid_cuda.mean), rel_tol=1e-12)
