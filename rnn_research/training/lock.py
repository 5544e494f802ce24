"""One writer per run directory: an exclusive `flock` on `workdir/.lock`.

The lock file holds its holder's pid, host and start time, so that a refused process can name
it. The operating system releases a `flock` when its holder exits, however it exits, so a file
left by a killed process never blocks a new run. The holder deletes the file when it is done
(while it still holds the lock); a process that locked a file that was deleted meanwhile sees
that the path no longer names its file and tries again, so two processes never both hold it.

  with hold(workdir):     # WorkdirBusy (a ValueError) if another process holds it
    ...                   # write config.json, checkpoints, status.json

No jax here.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from typing import Iterator

LOCK_FILE = ".lock"


class WorkdirBusy(ValueError):
  """Another live process holds the workdir's lock."""


class WorkdirUnusable(ValueError):
  """The workdir cannot be created or written (a file, read-only, ...)."""


def lock_path(workdir: str) -> str:
  """Path of the lock file of `workdir`."""
  return os.path.join(workdir, LOCK_FILE)


def _holder(fd: int) -> str:
  """`pid P on host H since T` from an open lock file, or a vaguer phrase if it is empty."""
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {info['pid']} on host {info['host']} since {info['since']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process (it is still starting)"


def _unusable(workdir: str, err: OSError) -> WorkdirUnusable:
  reason = {errno.EEXIST: "it is a file, not a directory", errno.ENOTDIR: "a parent is a file",
            errno.EACCES: "permission denied (read-only?)", errno.EROFS: "read-only file system"
            }.get(err.errno, err.strerror or type(err).__name__)
  return WorkdirUnusable(f"cannot write run directory {workdir}: {reason}; use another "
                         "--workdir")


def _open_locked(workdir: str) -> int:
  """An fd of `workdir/.lock`, exclusively flocked and still linked at that path."""
  path = lock_path(workdir)
  while True:
    try:
      os.makedirs(workdir, exist_ok=True)
      if not os.path.isdir(workdir):
        raise FileExistsError(errno.EEXIST, "exists", workdir)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
      raise _unusable(workdir, err) from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      raise WorkdirBusy(f"{workdir} is in use by {holder}; wait for it to end, or use "
                        "another --workdir") from None
    try:
      same = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      same = False
    if same:
      return fd
    os.close(fd)  # its holder deleted it after we opened it: lock the new one


def check_free(workdir: str) -> None:
  """Raises WorkdirBusy naming the holder if a live process holds `workdir`'s lock; creates
  and changes nothing (a quick check before the work that precedes `acquire`)."""
  try:
    fd = os.open(lock_path(workdir), os.O_RDONLY)
  except OSError:
    return  # no lock file (or none readable): `acquire` decides
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise WorkdirBusy(f"{workdir} is in use by {_holder(fd)}; wait for it to end, or use "
                      "another --workdir") from None
  finally:
    os.close(fd)


def acquire(workdir: str) -> int:
  """Creates `workdir` if needed and takes its lock; returns the lock's fd (see `release`).

  Raises WorkdirBusy naming the holder, or WorkdirUnusable naming the problem.
  """
  fd = _open_locked(workdir)
  info = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
  return fd


def release(workdir: str, fd: int) -> None:
  """Deletes the lock file and releases the lock taken by `acquire`."""
  try:
    os.unlink(lock_path(workdir))
  except FileNotFoundError:
    pass
  finally:
    os.close(fd)  # closing the last fd releases the flock


@contextlib.contextmanager
def hold(*workdirs: str) -> Iterator[None]:
  """Holds the lock of every workdir (all or none) for the `with` block."""
  taken: list[tuple[str, int]] = []
  try:
    for workdir in workdirs:
      taken.append((workdir, acquire(workdir)))
    yield
  finally:
    for workdir, fd in reversed(taken):
      release(workdir, fd)
