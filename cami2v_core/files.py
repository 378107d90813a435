"""Writing files atomically: a temporary file beside the target, fsync'd, then renamed over it.

A crash or an exception mid-write leaves the old file (if any) untouched and no temporary file behind. The new file
gets the permissions a plain `open(path, "w")` would give (0o666 less the umask): the temporary file is created
with mode 0o666 and the kernel applies the process umask, so the umask is never read or changed (`os.umask` can
only be read by setting it, which races with other threads creating files).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str = "utf-8"):
    """Open a temporary file for writing ("wb" or "w"); on a clean exit it replaces `path`, on an error it is removed."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w'; got {mode!r}")
    path = Path(path)
    tmp, fd = _create_temp(path)
    try:
        try:
            f = os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": encoding}))
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def _create_temp(path: Path) -> tuple[Path, int]:
    """(name, descriptor) of a new hidden file beside `path`, created with mode 0o666 & ~umask."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, _FLAGS, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it (POSIX; a no-op on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
