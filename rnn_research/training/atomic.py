"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Every write goes to a temporary file in the target's directory (`.<name>.<random>.tmp`),
is flushed and fsynced, then renamed over the target with `os.replace`. If anything fails
before the rename (the serialiser raising, a full disk, Ctrl-C), the old file stays as it was
and the temporary file is removed (a killed process may leave its temporary file behind, never
a partial target). The new file gets the mode a plain `open(path, "w")` would give it: the old
file's mode, or 0o666 less the umask for a new one.

  write_text("docs/REPORT.md", text)
  write_json("runs/a/status.json", {"state": "running"}, sort_keys=True)
  write_bytes("runs/a/compare.png", png)

No jax here: `compare` and `report` use it too.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from typing import Any

PathLike = str | os.PathLike[str]


def _open_temp(path: str) -> tuple[int, str]:
  """(fd, name) of a fresh temporary file beside `path`, created as open() would create it."""
  directory, name = os.path.split(path)
  while True:
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
      return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
    except FileExistsError:
      continue


def write_bytes(path: PathLike, data: bytes) -> None:
  """Replaces `path` with `data` atomically, creating its directory if needed."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = _open_temp(path)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    try:
      os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    except FileNotFoundError:
      pass  # a new file: keeps the umask's mode
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
  """Replaces `path` with `text` atomically (see `write_bytes`)."""
  write_bytes(path, text.encode(encoding))


def write_json(path: PathLike, obj: Any, *, sort_keys: bool = False) -> None:
  """Replaces `path` with `obj` as indented JSON (and a final newline), atomically.

  `obj` is serialised before anything is written, so a value json cannot encode raises
  TypeError and leaves the old file as it was.
  """
  write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
