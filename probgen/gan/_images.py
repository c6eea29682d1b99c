"""Image input checks shared by the image-to-image and style-based GANs.

Images enter every probgen GAN in [0, 1] (as the in-repo feature classifiers and the MNIST and
digits recipes hold them) and are mapped to [-1, 1] inside, where the generators' ``tanh``
outputs live.

Example:
    >>> import torch
    >>> from probgen.gan._images import check_image_shape, check_images
    >>> shape = check_image_shape((1, 8, 8), "image_shape")
    >>> x, flat = check_images(torch.rand(3, 64), shape, "x")
    >>> tuple(x.shape), flat
    ((3, 1, 8, 8), True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen.core.data import as_tensor, check_positive_int
from probgen.core.errors import DataError

# Values this far outside [0, 1] are rounding, not a wrong scale (e.g. 255-valued pixels).
_RANGE_SLACK = 1e-4


def check_image_shape(shape: Any, name: str) -> tuple[int, int, int]:
    """`shape` as a (channels, height, width) tuple of positive ints.

    Raises:
        DataError: naming `name` when it is not three positive integers.
    """
    if isinstance(shape, int) or not hasattr(shape, "__len__") or len(shape) != 3:
        raise DataError(f"{name} must be (channels, height, width), got {shape!r}")
    return tuple(check_positive_int(d, f"{name}[{i}]") for i, d in enumerate(shape))  # type: ignore[return-value]


def check_images(
    data: Any,
    shape: tuple[int, int, int],
    name: str,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, bool]:
    """A batch of images in [0, 1] as (n, C, H, W), and whether it was given flat.

    Accepted: (n, C, H, W), (n, H, W) when C is 1, and flat rows (n, C*H*W).

    Raises:
        DataError: naming `name` for another shape, non-finite values or values outside [0, 1].
    """
    tensor = as_tensor(data, name)
    if not tensor.is_floating_point():
        tensor = tensor.float()
    size = math.prod(shape)
    flat = tensor.dim() == 2 and tensor.shape[1] == size
    if flat:
        tensor = tensor.reshape(-1, *shape)
    elif tensor.dim() == 3 and shape[0] == 1 and tuple(tensor.shape[1:]) == shape[1:]:
        tensor = tensor.unsqueeze(1)
    elif tensor.dim() != 4 or tuple(tensor.shape[1:]) != shape:
        raise DataError(
            f"{name} has shape {tuple(tensor.shape)}; give images (n, {shape[0]}, {shape[1]}, "
            f"{shape[2]}) or flat rows (n, {size})"
        )
    if tensor.shape[0] == 0:
        raise DataError(f"{name} holds no images")
    if not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{name} holds NaN or infinite values")
    low, high = float(tensor.min()), float(tensor.max())
    if low < -_RANGE_SLACK or high > 1.0 + _RANGE_SLACK:
        raise DataError(
            f"{name} must hold pixel values in [0, 1], found [{low:.4g}, {high:.4g}] "
            "(divide 8-bit images by 255)"
        )
    tensor = tensor.clamp(0.0, 1.0).to(device=device, dtype=dtype)
    return tensor, flat


def to_signed(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], the generators' output range."""
    return x * 2.0 - 1.0


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) * 0.5
