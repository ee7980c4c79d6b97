"""A run directory owned by one run at a time, and cleaned of what a killed save left.

Two trainings writing into one directory interleave their logs and overwrite each other's
checkpoints while both exit 0. :class:`RunLock` makes the directory's owner explicit: a
lock file ``.lock`` holding the owner's pid, host and start time, created exclusively
(``O_EXCL``), removed when the run ends. A second run (or resume) on a locked directory is
refused with who holds it; a lock whose process is gone (killed with SIGKILL, a crashed
machine) is stale: it is reported and taken over.
"""
from __future__ import annotations

import gc
import glob
import json
import os
import socket
import sys
import time
import weakref

LOCK_NAME = ".lock"
FRESH_S = 10.0  # an unreadable lock younger than this is being written, not stale
_HELD: dict[str, weakref.ref] = {}  # locks this process holds, by real path


class RunDirectoryLocked(RuntimeError):
    """Another run owns the directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """The lock of run directory ``out_dir``; :meth:`acquire` / :meth:`release`, or a
    ``with`` block. ``report`` receives one line when a stale lock is taken over."""

    def __init__(self, out_dir: str, report=None, force: bool = False):
        self.out_dir = out_dir
        self.force = force  # take over whatever lock is there (the user says its run is gone)
        self.path = os.path.join(out_dir, LOCK_NAME)
        self.key = os.path.realpath(self.path)
        self.report = report or (lambda line: print(line, file=sys.stderr))
        self.held = False
        self._finalizer = None

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        if self.key in _HELD:
            gc.collect()  # an owner that is unreachable but not yet collected lets go
        if self.key in _HELD:
            raise RunDirectoryLocked(
                f"out_dir: {self.out_dir!r} is in use by another Trainer in this process; "
                f"finish that run (or call its close()) first")
        os.makedirs(self.out_dir, exist_ok=True)
        for _ in range(2):  # a stale lock is removed once, then taken
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "command": " ".join(sys.argv)}, f)
            self.held = True
            _HELD[self.key] = weakref.ref(self)
            # released if the owner is garbage-collected or the interpreter exits
            self._finalizer = weakref.finalize(self, _remove, self.path, self.key)
            return self
        raise RunDirectoryLocked(f"out_dir: could not take {self.path!r}: another run keeps "
                                 f"creating it")

    def _handle_existing(self) -> None:
        try:
            with open(self.path) as f:
                owner = json.load(f)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            # Unreadable: being written this instant by a run taking the lock (created, not
            # yet filled), or left half-written by one killed then. Only an old one is stale.
            try:
                age = time.time() - os.path.getmtime(self.path)
            except OSError:
                return  # gone meanwhile: try again
            if age < FRESH_S and not self.force:
                raise RunDirectoryLocked(f"out_dir: {self.out_dir!r} is being taken by another "
                                         f"run right now; pick another --out")
            owner, pid, host = {}, None, socket.gethostname()
        started = owner.get("started", "an unknown time")
        if self.force:
            self.report(f"fastcells: took over the lock in {self.out_dir!r} of pid {pid} on "
                        f"{host!r} (started {started}), as asked (--break-lock)")
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            return
        if host != socket.gethostname():
            raise RunDirectoryLocked(
                f"out_dir: {self.out_dir!r} is locked by pid {pid} on host {host!r} (started "
                f"{started}). If no run is active there, take it over with --break-lock "
                f"(Trainer(break_lock=True))")
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            raise RunDirectoryLocked(
                f"out_dir: {self.out_dir!r} is in use by another run (pid {pid}, started "
                f"{started}: {owner.get('command', '?')}); wait for it to finish, stop it, or "
                f"pick another --out")
        self.report(f"fastcells: removed a stale lock in {self.out_dir!r} (pid {pid}, started "
                    f"{started}, is gone: that run was killed before it could release it)")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._finalizer is not None:
                self._finalizer()  # removes the file once

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _remove(path: str, key: str) -> None:
    _HELD.pop(key, None)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_orphan_saves(out_dir: str, report=None) -> list[str]:
    """Deletes ``.tmp-*.pt`` files that a save killed mid-write left in ``out_dir`` (the
    checkpoints themselves are written atomically and stay valid); returns their paths.
    Only call it while holding the directory's lock: a live run's save in progress looks
    the same."""
    removed = []
    for path in sorted(glob.glob(os.path.join(out_dir, ".tmp-*.pt"))):
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    if removed and report is not None:
        report(f"fastcells: removed {len(removed)} unfinished checkpoint file(s) a killed "
               f"save left in {out_dir!r}: {', '.join(os.path.basename(p) for p in removed)}")
    return removed
