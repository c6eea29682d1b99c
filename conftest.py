"""Doctest isolation: the `Example:` sections in probgen/ run offline and without shared data.

CI runs `pytest --doctest-modules probgen`. A doctest is documentation a reader runs on a
fresh install, where neither the network nor the ``../shared/data`` folder can be assumed, so
every doctest runs with socket connections refused and the shared data folder reported absent:
a doctest that needs either fails here on every machine, not only on the machines that lack it.
Ordinary tests (tests/) are untouched; they skip on `SharedDataMissing` themselves.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from _pytest.doctest import DoctestItem


class NetworkDisabled(RuntimeError):
    """A doctest tried to open a network connection."""


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise NetworkDisabled("doctests run offline; make this example self-contained")


@pytest.fixture(autouse=True)
def _doctest_offline(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if not isinstance(request.node, DoctestItem):
        yield
        return
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    from probgen.recipes import _shared_data

    monkeypatch.setattr(_shared_data, "shared_data_dir", lambda: None)
    yield
