"""WaveGAN on synthetic tones and chirps, judged by sample metrics on spectral features.

Fits the WaveGAN of `models/wavegan_tones.py` (WGAN-GP, phase shuffle) to real-valued
waveforms of tones, chirps and noise. A WaveGAN has no likelihood, so it is judged by its
samples: MMD, Frechet distance and precision / recall / density / coverage on the log power
spectrum of each waveform, against held-out waveforms, beside real training waveforms (the
best achievable) and white noise of the same level (a bad baseline). With `--out PATH` it draws
spectrograms of data and generated waveforms. The full run (1,024 waveforms of 1,024 samples,
20 epochs) takes about 20 minutes on two CPU cores; `--epochs` and `--n-train` shorten it.

Run: python examples/wavegan_tones.py [--smoke] [--epochs 20] [--n-train 1024]
    [--out wavegan_spectrogram.png]
"""

from __future__ import annotations

import argparse
import time

import torch
from probgen.recipes import wavegan_tones


def spectrogram_png(rows: dict[str, torch.Tensor], path: str, columns: int = 4) -> None:
    """One row of spectrograms per entry of `rows` (data, generated, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, *(waves.shape[0] for waves in rows.values()))
    window = max(8, min(128, next(iter(rows.values())).shape[1] // 4))
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(3 * columns, 2.2 * len(rows)), squeeze=False
    )
    for row, (name, waves) in enumerate(rows.items()):
        for column in range(columns):
            axis = axes[row][column]
            axis.specgram(
                waves[column].numpy(), NFFT=window, noverlap=window // 2,
                Fs=wavegan_tones.SAMPLE_RATE,
            )
            axis.set_title(f"{name} {column + 1}", fontsize=8)
            axis.tick_params(labelsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    print(f"spectrograms written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (recipe: 20)")
    parser.add_argument("--n-train", type=int, default=None, help="training waveforms (1024)")
    parser.add_argument("--out", default=None, help="spectrogram PNG path (default: none)")
    arguments = parser.parse_args()
    options = wavegan_tones.SMOKE if arguments.smoke else {}
    data_options = dict(options.get("data", {}))
    if arguments.n_train is not None:
        data_options["n"] = arguments.n_train
    fit_options = dict(options.get("fit", {}))
    if arguments.epochs is not None:
        fit_options["n_epochs"] = arguments.epochs
    gan = wavegan_tones.build(**options.get("build", {}))
    train = wavegan_tones.data("train", **data_options)
    length = train.shape[1]
    n_test = 16 if arguments.smoke else 64
    test = wavegan_tones.data("test", n=n_test, length=length)

    started = time.perf_counter()
    gan.fit(train, **fit_options)
    seconds = time.perf_counter() - started
    last = gan.history_[-1]
    print(f"WaveGAN: {train.shape[0]} waveforms of {length} samples, {gan.n_iter_} epochs, "
          f"{last['steps']} generator steps in {seconds:.1f} s; last critic gap "
          f"{last.get('critic_gap', float('nan')):.3f}")

    noise = torch.randn(n_test, length, generator=torch.Generator().manual_seed(0)) * test.std()
    candidates = {
        "WaveGAN": gan.sample(n_test, seed=0),
        "real (train split)": wavegan_tones.data("train", n=n_test, length=length),
        "white noise": noise,
    }
    print(f"sample metrics on spectral features, {n_test} waveforms each against {n_test} test "
          "waveforms (lower MMD / Frechet and higher precision / recall are better):")
    names = ("mmd", "frechet", "precision", "recall", "density", "coverage")
    print(f"{'':20s}" + "".join(f"{name:>11s}" for name in names))
    for label, waves in candidates.items():
        figures = wavegan_tones.sample_metrics(test, waves)
        print(f"{label:20s}" + "".join(f"{figures[name]:11.4g}" for name in names))
    if arguments.out:
        spectrogram_png({"data": test, "WaveGAN": candidates["WaveGAN"]}, arguments.out)


if __name__ == "__main__":
    main()
