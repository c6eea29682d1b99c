"""Fit PixelRNN (Row LSTM and Diagonal BiLSTM) to binarized MNIST; exact test NLL and samples.

Each layer type is trained briefly, scored exactly on held-out images (nats per image and bits
per pixel), and draws a few images pixel by pixel, printed as text. Without
`../shared/data/binarized_mnist` the example says so and fits 8x8 stripe images instead.

Run: python examples/pixelrnn.py [--smoke] [--layer row|diagonal|both] [--n-train N]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from probgen.recipes import pixelrnn_mnist
from probgen.recipes._shared_data import SharedDataMissing

from probgen.deep.pixelrnn import PixelRNN


def stripes(n: int, seed: int) -> torch.Tensor:
    """8x8 binary images: horizontal or vertical stripes of random phase (a stand-in data set)."""
    generator = torch.Generator().manual_seed(seed)
    phase = torch.randint(0, 2, (n, 1, 1), generator=generator)
    vertical = torch.randint(0, 2, (n, 1, 1), generator=generator).bool()
    index = torch.arange(8)
    rows = (index[:, None] + phase) % 2
    columns = (index[None, :] + phase) % 2
    return torch.where(vertical, columns.expand(n, 8, 8), rows.expand(n, 8, 8)).long()


def as_text(image: torch.Tensor) -> str:
    return "\n".join("".join("#" if value else "." for value in row) for row in image.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--layer", choices=["row", "diagonal", "both"], default="both")
    parser.add_argument("--n-train", type=int, default=5000, help="training images (full run)")
    arguments = parser.parse_args()

    options = pixelrnn_mnist.SMOKE if arguments.smoke else {}
    n_train = options.get("data", {}).get("n", arguments.n_train)
    try:
        train = pixelrnn_mnist.data("train", n=n_train)
        test = pixelrnn_mnist.data("test", n=16 if arguments.smoke else 500)
        build = pixelrnn_mnist.build
        print(f"binarized MNIST: {len(train)} training images, {len(test)} test images")
    except SharedDataMissing as error:
        print(f"binarized MNIST is not here ({error}); 8x8 stripes instead")
        train, test = stripes(n_train, seed=0), stripes(64, seed=1)

        def build(**settings):
            return PixelRNN((8, 8), **{"first_kernel_size": 3, "seed": 0, **settings})

    layers = ["row", "diagonal"] if arguments.layer == "both" else [arguments.layer]
    for layer in layers:
        model = build(layer=layer, **options.get("build", {}))
        started = time.perf_counter()
        model.fit(train, **options.get("fit", {"n_epochs": 2}))
        seconds = time.perf_counter() - started
        with torch.no_grad():
            nll = -model.log_prob(test).double().mean().item()
        pixels = math.prod(model.image_shape)
        print(
            f"{layer}: trained {seconds:.1f} s; test NLL {nll:.2f} nats "
            f"({nll / (pixels * math.log(2)):.3f} bits per pixel, exact)"
        )
        samples = model.sample(2, seed=0)
        print(f"two samples (log-probabilities {model.log_prob(samples).tolist()}):")
        print(as_text(torch.cat(list(samples), 1)))


if __name__ == "__main__":
    main()
