"""Small image classifiers trained in this repository, for FID/KID-style scores on digits and MNIST.

No Inception weights can be downloaded here, so Fréchet and kernel distances, precision/recall
and the Inception-Score-style score use the penultimate layer of a small convolutional network
trained by `benchmarks/train_feature_classifier.py` (seeded; its test accuracy is in
`benchmarks/results/feature_classifier.json`). The weights ship inside the package as
safetensors files (`probgen/metrics/weights/NAME.safetensors`, under 1 MB each):

- ``"digits"``: scikit-learn's 8x8 digits, input (n, 64) or (n, 1, 8, 8) in [0, 1] (pixel / 16;
  trained on grey and binarised images, so the binarised digits recipes are in its domain);
- ``"mnist"``: grey-level 28x28 MNIST, input (n, 784) or (n, 1, 28, 28) in [0, 1] (also trained
  on binarised images).

Scores computed with these features compare models with each other in this repository; they are
not comparable with published FID figures (which use Inception-v3 on natural images).

Example:
    >>> import torch
    >>> from probgen.metrics.features import load_feature_classifier
    >>> net = load_feature_classifier("digits")
    >>> x = torch.rand(5, 64)
    >>> net(x).shape, net.features(x).shape, net.predict(x).shape
    (torch.Size([5, 10]), torch.Size([5, 64]), torch.Size([5]))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from probgen.core.errors import DataError

__all__ = [
    "FeatureClassifier",
    "ClassifierFeatures",
    "load_feature_classifier",
    "save_feature_classifier",
    "feature_classifier_names",
    "WEIGHTS_DIR",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_FORMAT = "1"
# Values this far outside [0, 1] are rounding, not a wrong scale.
_RANGE_SLACK = 1e-5


class FeatureClassifier(nn.Module):
    """Two 3x3 convolutions (each followed by ReLU and 2x2 max pooling), a hidden layer, logits.

    Args:
        name: ``"digits"`` or ``"mnist"`` (recorded in the weights file).
        image_size: side of the square grey image (8 or 28).
        channels: output channels of the two convolutions.
        num_features: width of the hidden (penultimate) layer, the feature dimension.
        n_classes: number of classes.
    """

    def __init__(
        self,
        name: str,
        image_size: int,
        channels: tuple[int, int] = (16, 32),
        num_features: int = 64,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        self.name = str(name)
        self.image_size = int(image_size)
        self.channels = (int(channels[0]), int(channels[1]))
        self.num_features = int(num_features)
        self.n_classes = int(n_classes)
        side = self.image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(1, self.channels[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(self.channels[0], self.channels[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(self.channels[1] * side * side, self.num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, self.n_classes)
        self.metadata: dict[str, str] = {}

    def config(self) -> dict[str, Any]:
        """The constructor arguments (what the weights file records)."""
        return {
            "name": self.name,
            "image_size": self.image_size,
            "channels": list(self.channels),
            "num_features": self.num_features,
            "n_classes": self.n_classes,
        }

    def check_images(self, x: Any, name: str = "x") -> torch.Tensor:
        """`x` as a float tensor (n, 1, s, s) on the network's device, or a `DataError`.

        Accepts (n, s*s), (n, s, s) and (n, 1, s, s) with values in [0, 1] (no NaN).
        """
        side = self.image_size
        parameter = self.head.weight
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(np.asarray(x, dtype=np.float64))
            except (TypeError, ValueError) as error:
                raise DataError(f"{name} could not be read as an array of numbers") from error
        shape = tuple(x.shape)
        if len(shape) == 2 and shape[1] == side * side:
            x = x.reshape(shape[0], 1, side, side)
        elif len(shape) == 3 and shape[1:] == (side, side):
            x = x.unsqueeze(1)
        elif not (len(shape) == 4 and shape[1:] == (1, side, side)):
            raise DataError(
                f"{name} has shape {shape}; the {self.name!r} classifier takes images of shape "
                f"(n, {side * side}) or (n, 1, {side}, {side})"
            )
        if shape[0] == 0:
            raise DataError(f"{name} is empty")
        x = x.to(device=parameter.device, dtype=parameter.dtype)
        if bool(torch.isnan(x).any()):
            raise DataError(f"{name} contains NaN values")
        low, high = float(x.min()), float(x.max())
        if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
            raise DataError(
                f"{name} has values in [{low:.4g}, {high:.4g}]; the {self.name!r} classifier "
                "takes images scaled to [0, 1]"
            )
        return x

    def features(self, x: Any) -> torch.Tensor:
        """Penultimate-layer activations (n, num_features) (after ReLU, like Inception's pool)."""
        return self.body(self.check_images(x))

    def forward(self, x: Any) -> torch.Tensor:
        """Class logits (n, n_classes)."""
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: Any) -> torch.Tensor:
        """Most probable class (n,) as int64."""
        return self.forward(x).argmax(-1)

    @torch.no_grad()
    def predict_proba(self, x: Any) -> torch.Tensor:
        """Class probabilities (n, n_classes)."""
        return self.forward(x).softmax(-1)

    def feature_extractor(self) -> ClassifierFeatures:
        """A module whose `forward` returns `features(x)`: the form torchmetrics' FID/KID expect."""
        return ClassifierFeatures(self)


class ClassifierFeatures(nn.Module):
    """Wraps a `FeatureClassifier` so that calling it gives features, with `num_features` set.

    This is what `torchmetrics.image.FrechetInceptionDistance(feature=...)` and
    `KernelInceptionDistance(feature=...)` take as a custom feature extractor.
    """

    def __init__(self, classifier: FeatureClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: Any) -> torch.Tensor:
        return self.classifier.features(x)


def feature_classifier_names() -> list[str]:
    """Names of the classifiers whose weights ship with the package."""
    return sorted(path.stem for path in WEIGHTS_DIR.glob("*.safetensors"))


def save_feature_classifier(
    classifier: FeatureClassifier, path: str | Path, **metadata: Any
) -> Path:
    """Write the classifier's weights and configuration (and `metadata`) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: value.detach().float().contiguous() for key, value in classifier.state_dict().items()
    }
    header = {"format": _FORMAT, "config": json.dumps(classifier.config())}
    header.update({key: json.dumps(value) for key, value in metadata.items()})
    save_file(tensors, str(path), metadata=header)
    return path


def load_feature_classifier(
    name: str = "mnist", *, path: str | Path | None = None
) -> FeatureClassifier:
    """The in-repo feature classifier `name` (``"digits"`` or ``"mnist"``), in eval mode.

    Args:
        name: which classifier (see `feature_classifier_names()`).
        path: a weights file written by `save_feature_classifier` instead of a shipped one.

    Returns:
        A `FeatureClassifier` on the CPU in float32 with gradients disabled for its parameters.

    Raises:
        DataError: unknown name, or a file that is not a feature-classifier weights file.
    """
    from safetensors import safe_open

    if path is None:
        known = feature_classifier_names()
        if name not in known:
            raise DataError(f"name must be one of {known}, got {name!r}")
        path = WEIGHTS_DIR / f"{name}.safetensors"
    path = Path(path)
    if not path.is_file():
        raise DataError(f"path {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        config = json.loads(header["config"])
    except Exception as error:  # safetensors raises its own error types
        raise DataError(
            f"{str(path)!r} is not a feature-classifier weights file: {error}"
        ) from error
    classifier = FeatureClassifier(
        config["name"],
        config["image_size"],
        tuple(config["channels"]),
        config["num_features"],
        config["n_classes"],
    )
    classifier.load_state_dict(tensors)
    classifier.metadata = {key: value for key, value in header.items() if key != "config"}
    classifier.requires_grad_(False)
    return classifier.eval()
