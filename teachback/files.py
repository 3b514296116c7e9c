"""Atomic file writes: a reader, or a run resumed after a crash, sees the old file or the new one, never half.

    atomic_write_text(path, text)          # or atomic_write_bytes(path, data)
    with atomic_path(path) as tmp:         # for a writer that wants a path (GGUFWriter, llama.cpp)
        writer.write(tmp)

The data goes to a temporary file next to the target (`.<name>.<pid>-<random>.tmp`), is fsynced, and is
renamed over the target with `os.replace`; then the folder is fsynced so the rename itself survives a power
cut. A target that exists keeps its permission bits; a new one gets the umask's. On any exception, Ctrl-C
included, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
    """Yield a temporary path next to `out` (its folder is made); on success fsync the file, rename it over
    `out` and fsync the folder. On any exception the temporary file is removed and `out` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(out.stat().st_mode))
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_folder(out.parent)


def atomic_write_bytes(out: Path, data: bytes) -> None:
    """Replace `out` with `data` atomically and durably."""
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(out: Path, text: str, encoding: str = "utf-8") -> None:
    """Replace `out` with `text` atomically and durably; newlines are written as given, never translated."""
    atomic_write_bytes(out, text.encode(encoding))


def fsync_folder(folder: Path) -> None:
    """Make the renames and new files in `folder` durable, where the platform allows it (not on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
