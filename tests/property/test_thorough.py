"""The property tests again with many more, non-derandomised examples (`-m slow`).

The default run uses the "probgen" profile (a dozen fixed examples per test, seconds); this
reruns the same tests under the "thorough" profile of conftest.py in a child pytest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_property_suite_with_many_examples():
    folder = Path(__file__).parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
            "--hypothesis-profile=thorough",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
