"""One atomic file writer for model files, checkpoints and saved samples.

The bytes go to a temporary file in the target's folder, are flushed and fsynced, and the
temporary file is renamed over the target: a crash at any point leaves either the old file or
the new one, never a torn file. The new file gets the permissions a plain `open(path, "wb")`
would give (the umask applies), not the 0600 of a temporary file.

Example:
    >>> import pathlib, tempfile
    >>> from probgen.core.atomic import atomic_write_bytes
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.bin"
    >>> atomic_write_bytes(path, b"hello")
    >>> path.read_bytes()
    b'hello'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` atomically: `write(stream)` fills a temporary file that replaces `path`.

    Args:
        path: the destination; its folder must exist.
        write: called with a binary stream open on the temporary file.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda stream: stream.write(payload))


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder entry is on disk; not every platform can
    # open a folder for that, and the file itself is already complete.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
