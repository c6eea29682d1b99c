"""Implicit generative models (GANs): no density, judged by their samples.

`GAN` (`probgen.gan.model`) with MLP or DCGAN networks (`networks`), the non-saturating,
hinge and WGAN-GP losses and PacGAN packing (`losses`), and the training diagnostics,
divergence test and weight averaging (`stability`); `VAEGAN` (`probgen.gan.vaegan`, Larsen et
al. 2016), a VAE judged in its discriminator's feature space; `WaveGAN`
(`probgen.gan.wavegan`), a 1-D DCGAN with phase shuffle for waveforms.

Example:
    >>> import probgen.gan
    >>> probgen.gan.LOSSES
    ('non_saturating', 'hinge', 'wgan_gp')
"""

from probgen.gan.losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pack_samples,
    r1_penalty,
)
from probgen.gan.model import GAN
from probgen.gan.vaegan import VAEGAN
from probgen.gan.wavegan import WaveGAN

__all__ = [
    "GAN",
    "LOSSES",
    "VAEGAN",
    "WaveGAN",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "pack_samples",
    "r1_penalty",
]
