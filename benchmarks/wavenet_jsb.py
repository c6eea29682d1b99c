"""WaveNet: JSB Chorales NLL per frame, mu-law bits per sample, cached vs naive generation.

1. jsb: the piano-roll WaveNet of `models/wavenet_jsb.py` on JSB Chorales (229 / 76 / 77
   chorales, 88 keys) at a stated CPU budget (epochs, early stopping on the validation split),
   test negative log-likelihood per frame by the protocol of Bai et al. (2018) (frames 2..T given
   the earlier ones; they report 8.10 TCN, 8.45 LSTM, 8.43 GRU), beside plain-torch LSTM and GRU
   frame models trained by the same loop at the same budget. probgen's own `SequenceModel`
   (LSTM/GRU) models token sequences, one categorical symbol per step, and cannot take 88-key
   multi-hot frames, so the recurrent references are written here.
2. tones: the mu-law WaveNet of `models/wavenet_tones.py` on synthetic tones and chirps: test
   bits per sample next to the noise floor (the entropy of the quantised noise given the clean
   signal) and the 8 bits of a uniform model; `WaveGAN` on the same waveforms (real-valued);
   both judged by sample metrics on spectral features (MMD, Frechet distance, precision /
   recall / density / coverage against test waveforms, beside real training waveforms and
   white noise), and a spectrogram PNG (data, WaveNet, WaveGAN) next to the results JSON.
3. generation: seconds to draw 4,000 steps with the cached dilated states and with the naive
   recomputation over the receptive field, for a standard WaveNet (256 levels, 2 cycles of
   dilations 1..512, receptive field 2,047) and for the tones recipe's smaller one; one
   sequence, one thread; the two paths must give the same draws for the same seed. Wall and
   process CPU seconds (the machine may be shared); run quiet and/or beside a CPU-burning
   process (`--load`).

Usage:
    python benchmarks/wavenet_jsb.py [--quick] [--only jsb tones generation] [--load quiet]
        [--threads N] [--jsb-epochs 40] [--tones-epochs 40] [--gan-epochs 20]
        [--steps 4000] [--out PATH]

Writes benchmarks/results/wavenet.json (`--only` rewrites just those sections) and prints a
summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _load import add_options, apply_threads, load_modes, under
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from probgen.recipes import wavenet_jsb, wavenet_tones  # noqa: E402
from probgen.recipes._shared_data import SharedDataMissing  # noqa: E402

from probgen.core.data import Sequences, as_sequences  # noqa: E402
from probgen.deep.wavenet import WaveNet, mu_law_decode  # noqa: E402
from probgen.fitting import fit_model  # noqa: E402
from probgen.gan.wavegan import WaveGAN  # noqa: E402

SECTIONS = ("jsb", "tones", "generation")


class FrameRNN(nn.Module):
    """Reference: an LSTM or GRU over 88-key frames with independent Bernoulli keys."""

    def __init__(self, arch: str, n_keys: int = 88, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        recurrent = nn.LSTM if arch == "lstm" else nn.GRU
        self.body = recurrent(n_keys, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_keys)

    def step_log_probs(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        inputs = F.pad(values[:, :-1], (0, 0, 1, 0))  # a zero begin frame in front
        hidden, _ = self.body(inputs)
        logits = self.head(self.dropout(hidden))
        step = -F.binary_cross_entropy_with_logits(logits, values, reduction="none").sum(-1)
        steps = torch.arange(values.shape[1], device=values.device)
        return step * (steps[None, :] < lengths[:, None])


def _cpu_seconds() -> float:
    return time.process_time()


def _rnn_nll(model: FrameRNN, rolls: list[torch.Tensor], skip_first: bool) -> float:
    model.eval()
    sequences = as_sequences(rolls, "rolls", event_shape=(88,), dtype=torch.float32)
    with torch.no_grad():
        steps = model.step_log_probs(sequences.values, sequences.lengths).double()
    if skip_first:
        steps = steps[:, 1:]
    frames = int(sequences.lengths.sum()) - (len(rolls) if skip_first else 0)
    return -steps.sum().item() / frames


def jsb(quick: bool, epochs: int) -> dict[str, Any]:
    try:
        train, valid, test = (wavenet_jsb.data(split) for split in ("train", "valid", "test"))
    except SharedDataMissing as error:
        return {"status": "skipped", "reason": str(error)}
    if quick:
        train, valid, test, epochs = train[:16], valid[:8], test[:8], 1
    patience = 5
    rows: dict[str, Any] = {}
    model = wavenet_jsb.build(n_epochs=epochs)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    model.fit(train, validation_data=valid, early_stopping_patience=patience)
    rows["wavenet"] = {
        "settings": {k: v for k, v in model.get_config().items() if k != "n_channels"},
        "receptive_field": model.receptive_field,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_run": model.n_iter_,
        "fit_wall_seconds": time.perf_counter() - wall,
        "fit_cpu_seconds": _cpu_seconds() - cpu,
        "valid_nll_per_frame": wavenet_jsb.nll_per_frame(model, valid),
        "test_nll_per_frame": wavenet_jsb.nll_per_frame(model, test),
        "test_nll_per_frame_all_frames": wavenet_jsb.nll_per_frame(model, test, False),
    }
    train_sequences = as_sequences(train, "train", event_shape=(88,), dtype=torch.float32)
    valid_sequences = as_sequences(valid, "valid", event_shape=(88,), dtype=torch.float32)

    def loss(net: FrameRNN, batch: Sequences) -> torch.Tensor:
        return -net.step_log_probs(batch.values, batch.lengths).sum() / batch.lengths.sum()

    def validation(net: FrameRNN, batch: Sequences) -> torch.Tensor:
        return net.step_log_probs(batch.values, batch.lengths).sum(-1)

    for arch in ("lstm", "gru"):
        torch.manual_seed(0)
        net = FrameRNN(arch)
        wall, cpu = time.perf_counter(), _cpu_seconds()
        history = fit_model(
            net,
            train_sequences,
            loss=loss,
            validation_data=valid_sequences,
            validation_log_prob=validation,
            n_epochs=epochs,
            batch_size=8,
            learning_rate=2e-3,
            grad_clip=1.0,
            early_stopping_patience=patience,
            seed=0,
        )
        rows[f"{arch}_reference"] = {
            "what": f"plain torch {arch.upper()} (1 layer, 128 units, dropout 0.2) over frames, "
            "same loop, batch, learning rate and epochs",
            "parameters": sum(p.numel() for p in net.parameters()),
            "epochs_run": len(history),
            "fit_wall_seconds": time.perf_counter() - wall,
            "fit_cpu_seconds": _cpu_seconds() - cpu,
            "valid_nll_per_frame": _rnn_nll(net, valid, True),
            "test_nll_per_frame": _rnn_nll(net, test, True),
            "test_nll_per_frame_all_frames": _rnn_nll(net, test, False),
        }
    return {
        "status": "ok",
        "budget": f"at most {epochs} epochs, early stopping patience {patience} on the "
        "validation split (best weights kept), one process on a shared CPU",
        "reference": wavenet_jsb.REFERENCE,
        "target_test_nll_per_frame": 8.5,
        "probgen_sequence_model": "SequenceModel (LSTM/GRU) takes one categorical token per "
        "step, not 88-key multi-hot frames; not run",
        "rows": rows,
    }


def spectral_features(waves: torch.Tensor, n_fft: int = 128) -> torch.Tensor:
    """Log power spectrum of each waveform (n, n_fft // 2 + 1), averaged over Hann frames."""
    window = torch.hann_window(n_fft, dtype=waves.dtype)
    frames = torch.stft(waves, n_fft, hop_length=n_fft // 2, window=window, return_complex=True)
    return torch.log(frames.abs().pow(2).mean(-1) + 1e-6)


def sample_metrics(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """MMD, Frechet distance and precision/recall/density/coverage on spectral features."""
    from probgen.metrics import (
        frechet_distance_from_samples,
        mmd,
        precision_recall_density_coverage,
    )

    real_features, fake_features = spectral_features(real), spectral_features(fake)
    return {
        "mmd": float(mmd(real_features, fake_features)),
        "frechet": float(frechet_distance_from_samples(real_features, fake_features)),
        **{
            k: float(v)
            for k, v in precision_recall_density_coverage(
                real_features, fake_features, k=min(5, real.shape[0] - 1)
            ).items()
        },
    }


def spectrogram_png(rows: dict[str, torch.Tensor], path: Path, columns: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 2.2 * len(rows)))
    for row, (name, waves) in enumerate(rows.items()):
        for column in range(columns):
            axis = axes[row][column]
            axis.specgram(
                waves[column].numpy(), NFFT=128, noverlap=64, Fs=wavenet_tones.SAMPLE_RATE
            )
            axis.set_title(f"{name} {column + 1}", fontsize=8)
            axis.tick_params(labelsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def tones(quick: bool, epochs: int, gan_epochs: int, png: Path | None) -> dict[str, Any]:
    n_train, n_test, length = (8, 4, 128) if quick else (128, 64, 1024)
    n_gan = 16 if quick else 1024
    epochs, gan_epochs = (1, 1) if quick else (epochs, gan_epochs)
    train = wavenet_tones.data("train", n=n_train, length=length)
    valid = wavenet_tones.data("valid", n=n_test, length=length)
    test = wavenet_tones.data("test", n=n_test, length=length)
    model = wavenet_tones.build(n_epochs=epochs)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    model.fit(train, validation_data=valid, early_stopping_patience=3)
    fit_wall, fit_cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    with torch.no_grad():
        bits = -model.log_prob(test).double().mean().item() / length / math.log(2)
    wavenet_row = {
        "settings": model.get_config(),
        "receptive_field": model.receptive_field,
        "epochs_run": model.n_iter_,
        "fit_wall_seconds": fit_wall,
        "fit_cpu_seconds": fit_cpu,
        "test_bits_per_sample": bits,
        "noise_floor_bits_per_sample": wavenet_tones.noise_floor_bits(
            "test", n=n_test, length=length
        ),
        "uniform_bits_per_sample": 8.0,
    }
    # A higher learning rate than the paper's 1e-4: the CPU budget allows few steps.
    gan = WaveGAN(
        length,
        n_layers=2 if quick else 3,
        generator_learning_rate=3e-4,
        discriminator_learning_rate=3e-4,
        n_epochs=gan_epochs,
        seed=0,
    )
    wall, cpu = time.perf_counter(), _cpu_seconds()
    gan.fit(wavenet_tones.waveforms("train", n=n_gan, length=length))
    gan_row = {
        "settings": gan.get_config(),
        "training_waveforms": n_gan,
        # The loop's "steps" counts minibatches so far: one generator step each.
        "generator_steps": gan.history_[-1]["steps"],
        "discriminator_steps": gan.history_[-1]["steps"] * gan.n_critic,
        "fit_wall_seconds": time.perf_counter() - wall,
        "fit_cpu_seconds": _cpu_seconds() - cpu,
        "last_epoch": {k: v for k, v in gan.history_[-1].items() if k != "val_log_prob"},
    }
    real = wavenet_tones.waveforms("test", n=n_test, length=length)
    generated = {
        "wavenet": mu_law_decode(model.sample(n_test, length=length, seed=0)),
        "wavegan": gan.sample(n_test, seed=0),
        "training_waveforms": wavenet_tones.waveforms("train", n=n_test, length=length),
        "white_noise": torch.randn(n_test, length, generator=torch.Generator().manual_seed(0))
        * real.std(),
    }
    metrics = {name: sample_metrics(real, waves) for name, waves in generated.items()}
    if png is not None:
        spectrogram_png(
            {"data": real, "WaveNet": generated["wavenet"], "WaveGAN": generated["wavegan"]}, png
        )
    return {
        "status": "ok",
        "data": f"{n_train} training / {n_test} test waveforms of {length} samples at "
        f"{wavenet_tones.SAMPLE_RATE} Hz, 256 mu-law levels (WaveGAN: {n_gan} real-valued "
        "training waveforms)",
        "wavenet": wavenet_row,
        "wavegan": gan_row,
        "sample_metrics": {
            "what": f"{n_test} generated waveforms against {n_test} test waveforms on spectral "
            "features (log power of 65 frequency bins, 128-sample Hann frames); "
            "training_waveforms is the score of real data (the best achievable), white_noise "
            "a bad baseline",
            **metrics,
        },
        "spectrogram_png": None if png is None else str(png.relative_to(ROOT)),
    }


def _time_sampling(model: WaveNet, steps: int, cached: bool) -> tuple[torch.Tensor, float, float]:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    draws = model.sample(1, length=steps, seed=0, cached=cached)
    return draws, time.perf_counter() - wall, _cpu_seconds() - cpu


def generation(quick: bool, steps: int, modes: list[str]) -> dict[str, Any]:
    steps = 300 if quick else steps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    configurations = {
        "standard_rf2047": WaveNet(
            n_levels=256, residual_channels=32, skip_channels=64, n_layers=10, n_cycles=2, seed=0
        ),
        "tones_recipe_rf256": wavenet_tones.build(),
    }
    results: dict[str, Any] = {"steps": steps, "sequences": 1, "torch_threads": 1}
    try:
        for name, model in configurations.items():
            model.init_for_evaluation()
            for mode in modes:
                with under(mode):
                    cached, cached_wall, cached_cpu = _time_sampling(model, steps, True)
                    naive, naive_wall, naive_cpu = _time_sampling(model, steps, False)
                results[f"{name}_{mode}"] = {
                    "receptive_field": model.receptive_field,
                    "cached_wall_seconds": cached_wall,
                    "naive_wall_seconds": naive_wall,
                    "cached_cpu_seconds": cached_cpu,
                    "naive_cpu_seconds": naive_cpu,
                    "speedup_wall": naive_wall / cached_wall,
                    "speedup_cpu": naive_cpu / cached_cpu,
                    "same_draws": bool(torch.equal(cached, naive)),
                }
    finally:
        torch.set_num_threads(threads)
    return results


def machine() -> dict[str, Any]:
    import probgen

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "probgen": probgen.__version__,
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--jsb-epochs", type=int, default=40)
    parser.add_argument("--tones-epochs", type=int, default=40)
    parser.add_argument("--gan-epochs", type=int, default=20, help="WaveGAN epochs (tones)")
    parser.add_argument("--steps", type=int, default=4000, help="generated steps to time")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "wavenet.json"))
    add_options(parser, default_load="quiet")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    output = Path(args.out)
    png = output.with_name("wavenet_spectrogram.png")
    report: dict[str, Any] = {}
    if output.exists() and set(args.only) != set(SECTIONS) and not args.quick:
        report = json.loads(output.read_text())
    report["machine"] = {**machine(), "threads_option": args.threads, "load": args.load}
    report["quick"] = args.quick
    runs = {
        "jsb": lambda: jsb(args.quick, args.jsb_epochs),
        "tones": lambda: tones(
            args.quick, args.tones_epochs, args.gan_epochs, None if args.quick else png
        ),
        "generation": lambda: generation(args.quick, args.steps, load_modes(args.load)),
    }
    keep = not args.quick or args.out != parser.get_default("out")
    for section in args.only:
        started = time.perf_counter()
        try:
            report[section] = runs[section]()
        except Exception:  # a failing section is recorded, the others still run
            report[section] = {"status": "error", "error": traceback.format_exc()}
        report[section]["section_wall_seconds"] = time.perf_counter() - started
        print(f"{section}: {json.dumps(report[section], default=str)[:1500]}", flush=True)
        # Written after every section, so that a long run stopped midway keeps what it has.
        if keep:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(report, indent=2, default=str))
    print(f"results in {output}" if keep else "quick run: results not kept (give --out)")
    return report


if __name__ == "__main__":
    main()
