"""On CUDA, Diffusion's bound equals the CPU's (its noise is a pure function of the counters).

Marker `gpu`: skipped without CUDA (tests/conftest.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from probgen.diffusion import Diffusion

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("network", ["mlp", "unet"])
def test_bound_and_sampling_on_cuda_match_cpu(network):
    shape = (2,) if network == "mlp" else (1, 8, 8)
    levels = None if network == "mlp" else 2
    generator = torch.Generator().manual_seed(0)
    if levels is None:
        x = torch.randn(64, *shape, generator=generator)
    else:
        x = torch.randint(0, 2, (64, *shape), generator=generator).float()
    model = Diffusion(shape, n_levels=levels, network=network, hidden_dims=(16,), n_steps=20,
                      n_epochs=1, seed=0).fit(x)
    cuda = copy.deepcopy(model).to("cuda")
    assert cuda.device.type == "cuda"
    cpu_bound = model.log_prob(x[:16])
    gpu_bound = cuda.log_prob(x[:16].cuda()).cpu()
    assert torch.allclose(cpu_bound, gpu_bound, rtol=1e-4, atol=1e-3)
    draws = cuda.sample(32, seed=0)
    assert draws.device.type == "cuda" and draws.shape == (32, *shape)
    assert torch.equal(draws, cuda.sample(32, seed=0))
    fitted = Diffusion(shape, n_levels=levels, network=network, hidden_dims=(16,), n_steps=20,
                       n_epochs=1, seed=0).to("cuda").fit(x.cuda())
    assert torch.isfinite(fitted.log_prob(x[:4].cuda())).all()
