"""One writer per run directory: an advisory lock held for the whole `train`/`sft` run.

Why: two trainers on one run directory interleave their logs and overwrite each other's checkpoints.
The lock is `fcntl.flock` on `<run>/.lock`, so the kernel drops it the moment its holder dies (even by
SIGKILL): a lock left by a killed process is never "stuck", the next run takes it over and says whose
it was. The file names the holder (pid, host, command, start time) so a refused second writer can say
who holds it. Where `fcntl` is missing (Windows) an `O_EXCL` pid file is used, with the pid checked for
liveness on the same host. Re-acquiring in the same process (the CLI and `train()` both lock) nests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from othinklab.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"

_held: dict[str, list[Any]] = {}  # resolved lock path -> [open file object or None, nesting depth]


class RunLockedError(UserError):
    """Another live process holds the run directory's lock."""


def _holder_info(what: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": what,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def read_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """What the lock file says about its (current or last) holder; None when absent or unreadable."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text(errors="replace")[:4096]
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _refuse(run: Path, info: dict[str, Any] | None) -> RunLockedError:
    return RunLockedError(
        f"run directory {str(run)!r} is in use by {_describe(info)}; two writers would interleave its logs "
        "and checkpoints. Wait for that run to finish (or stop it), or choose another train.run_name"
    )


def _acquire_flock(run: Path, path: Path, what: str) -> Any:
    fh = open(path, "a+")  # noqa: SIM115 - kept open for as long as the lock is held
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise _refuse(run, read_holder(run)) from None
    previous = read_holder(run)
    if previous and previous.get("pid") != os.getpid():
        print(
            f"othinklab: taking over the lock of {str(run)!r} left by {_describe(previous)}, no longer running",
            file=sys.stderr,
        )
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(_holder_info(what)))
    fh.flush()
    return fh


def _acquire_pidfile(run: Path, path: Path, what: str) -> None:  # pragma: no cover - used where fcntl is missing
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            info = read_holder(run)
            same_host = info is not None and info.get("host") == socket.gethostname()
            if same_host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
                print(
                    f"othinklab: taking over the stale lock of {str(run)!r} left by {_describe(info)}", file=sys.stderr
                )
                path.unlink(missing_ok=True)
                continue
            raise _refuse(run, info) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(_holder_info(what)))
        return None
    raise _refuse(run, read_holder(run))


def acquire(run_dir: str | Path, what: str = "train") -> None:
    """Take the run directory's lock (creating the directory); raise `RunLockedError` naming the holder."""
    run = Path(run_dir)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"run directory {str(run)!r} cannot be created: a file is in the way") from None
    path = run / LOCK_FILE
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        return
    fh = _acquire_flock(run, path, what) if fcntl is not None else _acquire_pidfile(run, path, what)
    _held[key] = [fh, 1]


def release(run_dir: str | Path) -> None:
    """Drop one level of the lock; the last level empties the lock file and unlocks it."""
    path = Path(run_dir) / LOCK_FILE
    key = str(path.resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    fh = entry[0]
    if fh is None:  # pragma: no cover - pid-file mode
        path.unlink(missing_ok=True)
        return
    with contextlib.suppress(OSError):
        fh.seek(0)
        fh.truncate()  # an empty file: no holder
        fh.flush()
    run = path.parent
    with contextlib.suppress(OSError):
        if [p.name for p in run.iterdir()] == [LOCK_FILE]:  # a run that wrote nothing leaves no directory
            path.unlink()
            run.rmdir()
    fh.close()  # closing drops the flock


@contextlib.contextmanager
def hold(run_dir: str | Path, what: str = "train") -> Iterator[Path]:
    """`with hold(run):` the lock for the block's duration (nested holds in one process are free)."""
    acquire(run_dir, what)
    try:
        yield Path(run_dir)
    finally:
        release(run_dir)


def is_held_here(run_dir: str | Path) -> bool:
    """True when this process holds the run directory's lock."""
    return str((Path(run_dir) / LOCK_FILE).resolve()) in _held
