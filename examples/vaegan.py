"""A VAE-GAN on digit images: reconstructions judged in the discriminator's feature space.

Fits `probgen.gan.vaegan.VAEGAN` (the `vaegan_mnist` recipe) on grey-level MNIST when the
shared data are present, else on scikit-learn's 8x8 digits, then reports what a model without
a density can be judged by: the held-out reconstructions (pixel error, and whether the in-repo
classifier still reads the right digit in them) and the prior samples (FID and precision/recall
on the classifier's features). `--out grid.png` also saves a picture of test images, their
reconstructions and samples.

Run: python examples/vaegan.py [--smoke] [--epochs N] [--out grid.png]
"""

from __future__ import annotations

import argparse

import torch
from probgen.recipes import vaegan_mnist
from probgen.recipes._gan_images import SOURCES, digit_images
from probgen.recipes._shared_data import SharedDataMissing

from probgen.core.errors import NoDensityError
from probgen.metrics import (
    frechet_distance_from_samples,
    load_feature_classifier,
    precision_recall_density_coverage,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run on 8x8 digits")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 20)")
    parser.add_argument("--out", default=None, help="save test/reconstruction/sample grid PNG")
    arguments = parser.parse_args()

    source = "digits"
    if not arguments.smoke:
        try:
            vaegan_mnist.data("test", n=1)
            source = "mnist"
        except SharedDataMissing:
            print("../shared/data is absent: using scikit-learn's 8x8 digits")
    smoke = vaegan_mnist.SMOKE
    n = smoke["data"]["n"] if arguments.smoke else None
    train = vaegan_mnist.data("train", n=n, source=source)
    test, labels = digit_images(source, "test", n=200 if arguments.smoke else None)
    overrides = dict(smoke["build"]) if arguments.smoke else {"data_shape": SOURCES[source]}
    model = vaegan_mnist.build(**overrides)
    epochs = arguments.epochs or (1 if arguments.smoke else 20)
    model.fit(train, n_epochs=epochs)
    last = model.history_[-1]
    print(f"VAE-GAN on {source} ({train.shape[0]} images, {epochs} epochs, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")
    print("last epoch: " + ", ".join(f"{k} {v:.3f}" for k, v in last["losses"].items())
          + f"; KL {last['kl']:.3f}, feature reconstruction {last['feature_reconstruction']:.3f},"
          f" discriminator accuracy {last['discriminator_accuracy']:.2f}")
    try:
        model.log_prob(test[:2])
    except NoDensityError as error:
        print(f"log_prob: {str(error)[:90]}...")

    classifier = load_feature_classifier(source)
    rebuilt = model.reconstruct(test)
    kept = float((classifier.predict(rebuilt) == labels).float().mean())
    print(f"test reconstructions: pixel MSE {float((rebuilt - test).square().mean()):.4f}, "
          f"classifier reads the same digit in {kept:.1%} (on the originals "
          f"{float((classifier.predict(test) == labels).float().mean()):.1%})")
    samples = model.sample(test.shape[0], seed=0)
    fid = frechet_distance_from_samples(test, samples, features=classifier.features)
    prdc = precision_recall_density_coverage(test, samples, k=5, features=classifier.features)
    print(f"samples: FID {float(fid):.2f} (classifier features), precision "
          f"{prdc['precision']:.3f}, recall {prdc['recall']:.3f}, coverage {prdc['coverage']:.3f}")
    if arguments.out:
        save_grid(arguments.out, test[:8], rebuilt[:8], samples[:8])
        print(f"wrote {arguments.out}")


def save_grid(path: str, *rows: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), rows[0].shape[0], figsize=(rows[0].shape[0], 3.2))
    for row, (images, title) in enumerate(zip(rows, ("test", "reconstructed", "sampled"))):
        for column, image in enumerate(images):
            axes[row, column].imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, column].axis("off")
        axes[row, 0].set_title(title, fontsize=8, loc="left")
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)


if __name__ == "__main__":
    main()
