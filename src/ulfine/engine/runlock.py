"""One process per folder: an OS lock (``flock``) on ``<folder>/.lock``, held while it works.

The kernel drops the lock when its holder exits, however it exits (kill -9 included), so a
stale lock file never blocks anyone; the file itself stays and only records the holder's pid
for the message the next process gets.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ulfine.errors import UlfineError

LOCK_NAME = ".lock"


class FolderBusyError(UlfineError, RuntimeError):
    """Another live process holds the folder's lock; the message names its pid."""


class FolderLock:
    """``with FolderLock(folder, what):`` or ``acquire()`` / ``release()``; never blocks."""

    def __init__(self, folder: str | Path, what: str = "folder") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise FolderBusyError(
                f"{self.what} '{self.path.parent}' is in use by {who} (it holds {self.path}); wait for it "
                "to finish or stop it, or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(folder: str | Path) -> bool:
    """Whether a live process holds ``folder``'s lock (e.g. a cache build still running)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return False
    try:
        with FolderLock(folder):
            return False
    except FolderBusyError:
        return True
