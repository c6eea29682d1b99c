"""Functions the data-parallel tests run on every rank (`spawn_local` pickles them by name)."""

from __future__ import annotations

from typing import Any

import torch

from probgen import distributed
from probgen.deep.flows import Flow
from probgen.deep.vae import VAE
from probgen.gan.model import GAN


def flow_settings() -> dict[str, Any]:
    return {"dim": 2, "kind": "maf", "n_layers": 2, "hidden_dims": (8,), "seed": 0}


def fit_flow(shards: list[torch.Tensor], options: dict[str, Any]) -> dict[str, Any]:
    """Fit a float64 MAF on this rank's shard; its parameters and history."""
    me = distributed.rank()
    flow = Flow(**flow_settings()).double()
    options = dict(options)
    if "validation_data" in options:
        options["validation_data"] = options["validation_data"][me]
    flow.fit(shards[me], **options)
    return {"state": flow.state_dict(), "history": flow.history_}


def fit_stochastic(shards: list[torch.Tensor]) -> dict[str, Any]:
    """A VAE and a GAN (noise in their losses) on this rank's shard; their parameters.

    The VAE is unseeded: the ranks start from different weights unless rank 0's are broadcast.
    """
    me = distributed.rank()
    torch.manual_seed(me)
    vae = VAE(
        2,
        latent_dim=2,
        hidden_dims=(8,),
        likelihood="gaussian",
        n_epochs=2,
        batch_size=16,
        seed=None,
    )
    vae.fit(shards[me])
    gan = GAN(2, latent_dim=2, hidden_dims=(8,), n_epochs=2, batch_size=16, seed=0)
    gan.fit(shards[me])
    return {
        "vae": vae.state_dict(),
        "vae_loss": [h["train_loss"] for h in vae.history_],
        "gan": gan.state_dict(),
        "gan_losses": [h["losses"] for h in gan.history_],
    }


def cli_fit(folder: str) -> int:
    """`probgen fit gmm_blobs` on this rank, writing to a file named after the rank."""
    from probgen import cli

    out = f"{folder}/rank{distributed.rank()}.probgen"
    return cli.main(["fit", "gmm_blobs", "--smoke", "--out", out])


def vae_settings(**overrides: Any) -> dict[str, Any]:
    settings = {
        "input_shape": 2,
        "latent_dim": 2,
        "hidden_dims": (8,),
        "likelihood": "gaussian",
        "seed": 3,
    }
    settings.update(overrides)
    return settings


def fit_vaes(
    shards: list[torch.Tensor], jobs: list[tuple[dict[str, Any], dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Float64 VAEs (constructor settings, fit options) on this rank's shard."""
    me = distributed.rank()
    results = []
    for settings, options in jobs:
        vae = VAE(**vae_settings(**settings)).double()
        vae.fit(shards[me], **options)
        results.append({"state": vae.state_dict(), "history": vae.history_})
    return results


def run_experiment(config_path: str, out_dir: str) -> str:
    """`probgen.experiments.run_file` on this rank (the methods are shared out over ranks)."""
    from probgen.experiments import run_file

    return str(run_file(config_path, out_dir, progress=False))
