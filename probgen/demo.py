"""The `probgen demo`: fit the dishonest-casino HMM to simulated rolls and show what it found.

`run_demo` simulates Durbin's casino (a fair die and a loaded one that shows a six half the
time), fits a two-state categorical HMM by Baum-Welch EM, prints the recovered parameters next
to the true ones (the fitted states matched to fair/loaded), prints the Viterbi-decoded
fair/loaded segments with their accuracy, and writes a plot of rolls, true and decoded dice.

Example:
    >>> import tempfile, pathlib
    >>> from probgen.demo import run_demo
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> result = run_demo(folder, n_rolls=300, progress=False)  # doctest: +SKIP
    >>> sorted(result)  # doctest: +SKIP
    ['accuracy', 'fitted', 'log_likelihood', 'n_iter', 'plot', 'seconds', 'segments', 'true']
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from probgen.core.data import check_positive_int
from probgen.core.errors import DataError

FACES = "123456"
NAMES = ("fair", "loaded")


def run_demo(
    out_dir: Path, seed: int = 0, n_rolls: int = 2000, progress: bool = True
) -> dict[str, Any]:
    """Fit the casino HMM on `n_rolls` simulated rolls, print the findings, save casino.png.

    Args:
        out_dir: folder for the plot (created if missing).
        seed: seed of the simulation and of the fit's random starts.
        n_rolls: number of simulated rolls.
        progress: print a progress bar during the fit and the report afterwards.

    Returns:
        A dict with the true and fitted parameters (``true``, ``fitted``), the Viterbi
        ``accuracy``, the decoded ``segments`` (die, first roll, last roll), the final
        ``log_likelihood``, ``n_iter``, ``seconds`` and the ``plot`` path.
    """
    from probgen.recipes import hmm_casino

    n_rolls = check_positive_int(n_rolls, "n_rolls", minimum=10)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"out_dir {str(out_dir)!r} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    say = print if progress else _silent

    rolls, dice = hmm_casino.simulate(n_rolls, seed=seed)
    say(f"Simulated {n_rolls} rolls of Durbin's dishonest casino (seed {seed}).")
    model = hmm_casino.build(seed=seed, n_init=2, progress=progress)
    started = time.perf_counter()
    model.fit(rolls.unsqueeze(0))
    seconds = time.perf_counter() - started

    # Match fitted states to dice: the loaded state is the one that favours sixes.
    loaded = int(model.emission_probs[:, 5].argmax())
    order = [1 - loaded, loaded]
    fitted = {
        "start_probs": model.start_probs[order].tolist(),
        "transition_probs": model.transition_probs[order][:, order].tolist(),
        "emission_probs": model.emission_probs[order].tolist(),
    }
    true = {
        "start_probs": hmm_casino.TRUE_START_PROBS,
        "transition_probs": hmm_casino.TRUE_TRANSITION_PROBS,
        "emission_probs": hmm_casino.TRUE_EMISSION_PROBS,
    }
    paths, _ = model.viterbi(rolls.unsqueeze(0))
    decoded = torch.tensor(order)[paths[0]].tolist()  # 0 fair, 1 loaded
    truth = dice.tolist()
    accuracy = sum(a == b for a, b in zip(decoded, truth)) / n_rolls
    segments = _runs(decoded)
    log_likelihood = model.score(rolls.unsqueeze(0))

    say(
        f"Fitted a 2-state HMM by Baum-Welch EM in {seconds:.1f} s "
        f"({model.n_iter_} iterations, log-likelihood {log_likelihood:.2f})."
    )
    say(_parameter_table(true, fitted))
    say(f"\nViterbi decoding: {accuracy:.1%} of rolls assigned to the die actually in use.")
    say(_segment_listing(segments, truth))
    plot_path = _plot(out_dir / "casino.png", rolls.tolist(), truth, decoded)
    say(f"\nPlot of rolls, true and decoded dice: {plot_path}")
    return {
        "true": true,
        "fitted": fitted,
        "accuracy": accuracy,
        "segments": [(NAMES[die], first, last) for die, first, last in segments],
        "log_likelihood": log_likelihood,
        "n_iter": model.n_iter_,
        "seconds": seconds,
        "plot": plot_path,
    }


def _silent(*_: Any, **__: Any) -> None:
    return None


def _runs(states: list[int]) -> list[tuple[int, int, int]]:
    """Run-length encoding: (state, first index, last index) per maximal run."""
    runs = []
    begin = 0
    for index in range(1, len(states) + 1):
        if index == len(states) or states[index] != states[begin]:
            runs.append((states[begin], begin, index - 1))
            begin = index
    return runs


def _parameter_table(true: dict[str, Any], fitted: dict[str, Any]) -> str:
    lines = ["", f"{'parameter':<28}{'true':>9}{'fitted':>9}"]

    def row(label: str, truth: float, estimate: float) -> None:
        lines.append(f"{label:<28}{truth:>9.3f}{estimate:>9.3f}")

    row("P(fair -> loaded)", true["transition_probs"][0][1], fitted["transition_probs"][0][1])
    row("P(loaded -> fair)", true["transition_probs"][1][0], fitted["transition_probs"][1][0])
    for die, name in enumerate(NAMES):
        for face in range(6):
            row(
                f"P({FACES[face]} | {name} die)",
                true["emission_probs"][die][face],
                fitted["emission_probs"][die][face],
            )
    return "\n".join(lines)


def _segment_listing(segments: list[tuple[int, int, int]], truth: list[int]) -> str:
    loaded = [(first, last) for die, first, last in segments if die == 1]
    true_loaded = [(first, last) for die, first, last in _runs(truth) if die == 1]
    shown = ", ".join(f"{first + 1}-{last + 1}" for first, last in loaded[:12])
    more = f", ... ({len(loaded) - 12} more)" if len(loaded) > 12 else ""
    compact = "".join("L" if die else "F" for die, first, last in segments[:60])
    return (
        f"Decoded loaded-die stretches (roll numbers): {shown or 'none'}{more}\n"
        f"{len(loaded)} decoded loaded stretches vs {len(true_loaded)} true ones; "
        f"run sequence: {compact}{'...' if len(segments) > 60 else ''}"
    )


def _plot(path: Path, rolls: list[int], truth: list[int], decoded: list[int]) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = range(1, len(rolls) + 1)
    figure, axes = plt.subplots(
        3, 1, figsize=(12, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]}
    )
    axes[0].plot(steps, [r + 1 for r in rolls], ".", markersize=2, color="0.3")
    axes[0].set_ylabel("roll")
    axes[0].set_yticks(range(1, 7))
    axes[0].set_title("Dishonest casino: rolls, true die and Viterbi-decoded die")
    for axis, states, label, colour in (
        (axes[1], truth, "true die", "tab:red"),
        (axes[2], decoded, "decoded", "tab:blue"),
    ):
        axis.fill_between(steps, states, step="mid", color=colour, alpha=0.6)
        axis.set_yticks([0, 1])
        axis.set_yticklabels(["fair", "loaded"])
        axis.set_ylabel(label)
    axes[2].set_xlabel("roll number")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
