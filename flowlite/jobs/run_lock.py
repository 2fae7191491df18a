"""One run per run folder: a lock file created with ``O_EXCL`` that holds the owner's pid and host.

A second run into a locked folder is refused with one line. The lock is removed when the run ends (normally, on an
error or on Ctrl-C); a lock left by a process that was killed (``kill -9``, a power cut) names a pid that no longer
runs on this host, and the next run takes it over with a message.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from flowlite.errors import FlowliteError

LOCK_FILE = ".flowlite.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(folder, flag):`` creates ``folder`` if needed and holds ``folder/.flowlite.lock``. On exit the
    lock is removed, and so is the folder if this lock created it and nothing else was written."""

    def __init__(self, folder: str | Path, flag: str = "--out", say=lambda m: print(m, file=sys.stderr)):
        self.folder, self.flag, self.say = Path(folder), flag, say
        self.path = self.folder / LOCK_FILE
        self.created_folder = False
        self.held = False

    def acquire(self) -> "RunLock":
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self.created_folder = True
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise FlowliteError(f"{self.flag} {str(self.folder)!r}: could not create the lock file {LOCK_FILE}")

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, host = (self.path.read_text().split() + ["?", "?"])[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, host = -1, "?"
        if pid > 0 and host == socket.gethostname() and not _alive(pid):
            self.say(f"note: {str(self.folder)!r} was locked by process {pid}, which no longer runs; taking it over")
            self.path.unlink(missing_ok=True)
            return
        owner = f"process {pid} on {host}" if pid > 0 else "another run"
        raise FlowliteError(f"{self.flag} {str(self.folder)!r} is in use by {owner} (lock file {LOCK_FILE}); wait "
                            "for it to finish, choose another folder, or delete the lock file if that run is gone")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.path.unlink(missing_ok=True)
        if self.created_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
