"""Every script in examples/ runs end to end with --smoke."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs_with_smoke(script):
    result = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=script.parents[1],
        env={"OMP_NUM_THREADS": "1", **os.environ},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip(), "an example must print what it found"
