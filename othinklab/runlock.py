"""One writer per run directory: a `filelock` lock on `<run>/.lock`, held for the whole `train`/`sft` run.

Why: two trainers on one run directory interleave their logs and overwrite each other's checkpoints. It is
an OS lock (flock): the kernel drops it when its holder dies (even by SIGKILL), and the next run takes it
over, saying whose it was. The file names its holder (pid, host, command, start time) for a refused second
writer to report. It is never followed through a link nor opened as a directory or FIFO (a planted link
would make a run truncate or create a file anywhere writable). Re-acquiring in the same process nests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from othinklab.errors import UserError

LOCK_FILE = ".lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # no link, and a FIFO never blocks

_locks: dict[str, FileLock] = {}  # absolute lock path -> the lock this process holds


class RunLockedError(UserError):
    """Another live process holds the run directory's lock."""


def _rw(path: Path, text: str | None = None) -> str:
    """Read (`text` None) or replace the lock file's contents through a descriptor that follows no link and
    refuses anything but a regular file."""
    fd = os.open(path, (os.O_RDONLY if text is None else os.O_WRONLY) | _NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        if text is None:
            return os.read(fd, 4096).decode("utf-8", errors="replace")
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
        return text
    finally:
        os.close(fd)


def read_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """What the lock file says about its (current or last) holder; None when absent or unreadable."""
    try:
        text = _rw(Path(run_dir) / LOCK_FILE)
        info = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (its details are not readable)"
    return (
        f"pid {str(info.get('pid', '?'))[:20]} on host {str(info.get('host', '?'))[:80]!r} "
        f"({str(info.get('command', '?'))[:40]}, since {str(info.get('started', '?'))[:30]})"
    )


def _check_lock_path(path: Path) -> None:
    """Refuse a lock path that is a link (even a dangling one), directory, FIFO or device, before any open."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _unusable(path, exc) from None
    if stat.S_ISREG(mode):
        return
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    raise UserError(
        f"run lock {str(path)!r} is {kind}; othinklab never writes through it (a link would let a run truncate or "
        "create the file it points to). Remove it, then run again; nothing was written"
    )


def _unusable(path: Path, exc: OSError) -> UserError:
    return UserError(
        f"run lock {str(path)!r} cannot be taken ({exc.strerror or exc}); the run directory must be a writable "
        "directory on a local disk (not read-only). Choose another train.output_dir or fix its permissions"
    )


def acquire(run_dir: str | Path, what: str = "train") -> None:
    """Take the run directory's lock (creating the directory); raise `RunLockedError` naming the holder."""
    run = Path(run_dir)
    path = run / LOCK_FILE
    key = os.path.abspath(path)
    if key in _locks:
        _locks[key].acquire()  # nests: filelock counts the levels
        return
    try:
        run.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"run directory {str(run)!r} cannot be created: a file is in the way") from None
    except OSError as exc:
        raise _unusable(path, exc) from None
    _check_lock_path(path)
    lock = FileLock(str(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"run directory {str(run)!r} is in use by {_describe(read_holder(run))}; two writers would interleave "
            "its logs and checkpoints. Wait for that run to finish (or stop it), or choose another train.run_name"
        ) from None
    except OSError as exc:
        raise _unusable(path, exc) from None
    try:
        previous = read_holder(run)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": what}
        _rw(path, json.dumps({**me, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    except OSError as exc:
        lock.release()
        raise _unusable(path, exc) from None
    if previous and previous.get("pid") != os.getpid():
        print(
            f"othinklab: taking over the lock of {str(run)!r} left by {_describe(previous)}, no longer running",
            file=sys.stderr,
        )
    _locks[key] = lock


def release(run_dir: str | Path) -> None:
    """Drop one level of the lock; the last level empties the lock file (no holder) and unlocks it."""
    path = Path(run_dir) / LOCK_FILE
    lock = _locks.get(os.path.abspath(path))
    if lock is None:
        return
    if lock.lock_counter > 1:
        lock.release()
        return
    del _locks[os.path.abspath(path)]
    with contextlib.suppress(OSError):
        _rw(path, "")
        if [p.name for p in path.parent.iterdir()] == [LOCK_FILE]:  # a run that wrote nothing leaves no directory
            path.unlink()
            path.parent.rmdir()
    lock.release()


@contextlib.contextmanager
def hold(run_dir: str | Path, what: str = "train") -> Iterator[Path]:
    """`with hold(run):` the lock for the block's duration (nested holds in one process are free)."""
    acquire(run_dir, what)
    try:
        yield Path(run_dir)
    finally:
        release(run_dir)
