"""`probgen.core.progress`: live bars on a terminal, (almost) silent when stderr is piped."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from probgen.core import progress
from probgen.core.progress import QUIET_INTERVAL, progress_bar


def _drawn_lines(text: str) -> list[str]:
    # A terminal bar redraws with carriage returns; a log shows each redraw as a line.
    return [line for line in text.replace("\r", "\n").split("\n") if line.strip()]


def test_piped_bar_prints_nothing_per_update(monkeypatch):
    monkeypatch.setattr(progress, "interactive_stderr", lambda: False)
    out = io.StringIO()
    bar = progress_bar(500, "EM", file=out, mininterval=0.0)
    for step in range(500):
        bar.update(1)
        bar.set_postfix(loglik=step)  # tqdm would redraw here by default
    bar.close()
    assert bar.n == 500
    assert _drawn_lines(out.getvalue()) == []
    assert bar.mininterval >= QUIET_INTERVAL and bar.delay >= QUIET_INTERVAL


def test_terminal_bar_is_live(monkeypatch):
    monkeypatch.setattr(progress, "interactive_stderr", lambda: True)
    out = io.StringIO()
    bar = progress_bar(50, "EM", file=out, mininterval=0.0)
    for step in range(50):
        bar.update(1)
        bar.set_postfix(loglik=step)
    bar.close()
    assert len(_drawn_lines(out.getvalue())) >= 50


def test_disabled_bar_is_silent_and_counts(monkeypatch):
    monkeypatch.setattr(progress, "interactive_stderr", lambda: True)
    out = io.StringIO()
    bar = progress_bar(5, "EM", enabled=False, file=out)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""


def test_demo_piped_does_not_print_a_line_per_iteration(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "probgen.cli", "demo", "--out", str(tmp_path), "--rolls", "300"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "HMM fit" not in result.stderr
    assert len(_drawn_lines(result.stderr)) <= 5, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) < 60
