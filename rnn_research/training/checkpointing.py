"""Synchronous orbax checkpoints of a training-state pytree, with fallback on corruption.

`Checkpointer` wraps `orbax.checkpoint.CheckpointManager` (one `StandardSave` item per
step, directories `<directory>/<step>/`). A save is complete on disk when `save` returns.
`restore(target)` loads the newest readable step into `target`'s structure, dtypes and
shapes (concrete leaves or `jax.ShapeDtypeStruct`s), bit-exact; an unreadable newer step
is reported with a one-line warning and skipped, never deleted. Leftover
`<step>.orbax-checkpoint-tmp-*` folders from a killed save are ignored (orbax never lists
them) and left alone, since a live writer in another process may own them.

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  restored = ckpt.restore(state)            # None on a fresh run
  start, state = restored if restored else (0, state)
  ...
  ckpt.save(step, state)

Leaves may be jax arrays (typed PRNG keys included), numpy arrays, numpy scalars and
Python ints/floats; optax states (namedtuples) restore into the target's own types.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
log = logging.getLogger(__name__)


class _QuietOrbax(logging.Filter):
  """Drops orbax's INFO/DEBUG chatter (dozens of lines per save) from absl's log, and all of
  its lines while a restore is tried, and its errors on reading a step's metadata: an
  unreadable step is reported in one line by `restore`."""

  restoring = 0  # restores in progress (orbax logs from its own threads)

  def filter(self, record: logging.LogRecord) -> bool:
    if "orbax" not in record.pathname:
      return True
    return (record.levelno >= logging.WARNING and not _QuietOrbax.restoring
            and not record.getMessage().startswith("Failed to read Metadata file"))


logging.getLogger("absl").addFilter(_QuietOrbax())
_NOISE = ("orbax", "tensorstore", "OCDBT", "zarr")


class _QuietAftermath(logging.Filter):
  """Drops asyncio's "exception was never retrieved" records of a failed orbax read."""

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not ("never retrieved" in text and any(n in text for n in _NOISE))


def _quiet_aftermath() -> None:
  """During and after a failed restore, tensorstore's callbacks reach orbax's closed event loop from
  other threads ("Event loop is closed", dozens of tracebacks, some after `restore` has
  returned): drop those, and asyncio's reports of the abandoned reads. Installed once."""
  previous = sys.unraisablehook
  if getattr(previous, "quiet_aftermath", False):
    return

  def hook(unraisable: Any) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and "Event loop is closed" in str(unraisable.exc_value)):
      previous(unraisable)

  hook.quiet_aftermath = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_QuietAftermath())


def short_reason(error: BaseException, limit: int = 100) -> str:
  """`Type: reason` in one short line: TensorStore's specs dropped, the innermost causes kept."""
  text = " ".join(str(error).split())
  text = re.split(r" \[(?:tensorstore_spec|source locations)", text)[0] or "(no message)"
  parts = text.split(": ")
  reason = parts.pop()
  while parts and len(parts[-1]) + len(reason) + 2 <= limit:
    reason = f"{parts.pop()}: {reason}"
  return f"{type(error).__name__}: {reason[:limit]}"


class CheckpointsUnreadableError(RuntimeError):
  """Every checkpoint in the directory failed to restore; none was touched."""


def _to_orbax(x: Any) -> Any:
  # orbax's StandardRestore rejects numpy scalars (np.float32(1.0)); use 0-d arrays.
  return np.asarray(x) if isinstance(x, np.generic) else x


class Checkpointer:
  """Saves and restores training-state pytrees under `directory` (made by the first save).

  Keeps the newest `max_to_keep` steps. Not thread-safe; one writing process per
  directory (readers in other processes are fine).
  """

  def __init__(self, directory: str, max_to_keep: int = 3) -> None:
    if not isinstance(max_to_keep, int) or max_to_keep < 1:
      raise ValueError(f"max_to_keep (config.train.max_to_keep) must be a positive integer, "
                       f"got {max_to_keep!r}")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=False,
        create=False,  # a reader (e.g. `sample` on a wrong path) must not make directories
        cleanup_tmp_directories=False,  # another process may be mid-save
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._unreadable: set[int] = set()  # steps restore() had to skip

  def all_steps(self) -> list[int]:
    """Every finalized step on disk (readable or not), ascending."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest finalized step on disk, or None if there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: PyTree, *, force: bool = False) -> bool:
    """Writes `state` as checkpoint `step`; returns True once it is fully on disk.

    Returns False, writing nothing, when `step` is not newer than the latest step on
    disk (existing checkpoints are never overwritten). A newer step that `restore`
    found unreadable does not block: it is renamed to `<step>.unreadable-<time>`
    (kept, not deleted). `force` mirrors orbax's flag and changes nothing here: every
    call is a save point. An older step stays refused even with it, because orbax's
    `max_to_keep` would then delete newer checkpoints rather than the forced one.
    """
    del force  # every newer step is saved; see the docstring
    step = int(step)
    self._quarantine(min_step=step)
    steps = self.all_steps()
    if steps and steps[-1] >= step:
      return False
    state = jax.tree.map(_to_orbax, state)
    os.makedirs(self.directory, exist_ok=True)
    saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()
    return bool(saved)

  def restore(self, target: PyTree) -> tuple[int, PyTree] | None:
    """Restores the newest readable step into the structure of `target`.

    Returns (step, state), or None when no checkpoint exists. An unreadable step is
    logged as one warning line and the next older one is tried; if none can be
    read, raises CheckpointsUnreadableError listing each step's error.
    """
    steps = self.all_steps()
    if not steps:
      return None
    restore_target = jax.tree.map(_to_orbax, target)
    _quiet_aftermath()  # before the first try: its noise may start before it fails
    errors = []
    for step in reversed(steps):
      _QuietOrbax.restoring += 1
      try:
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(restore_target))
      except Exception as e:  # noqa: BLE001 - any failure means "try an older step"
        errors.append(f"step {step}: {short_reason(e)}")
        self._unreadable.add(step)
        log.warning("checkpoint step %d (%s) is unreadable: %s; trying an older one", step,
                    os.path.join(self.directory, str(step)), short_reason(e))
        continue
      finally:
        _QuietOrbax.restoring -= 1
      # Give numpy-scalar leaves their numpy scalar type back.
      restored = jax.tree.map(
          lambda t, r: type(t)(r) if isinstance(t, np.generic) else r, target, restored)
      return step, restored
    raise CheckpointsUnreadableError(
        f"no checkpoint in {self.directory} could be restored (all kept on disk; if every "
        f"step fails alike, `target` may not match what was saved, e.g. a changed config): "
        + "; ".join(errors))

  def _quarantine(self, min_step: int) -> None:
    """Renames steps >= `min_step` that restore() found unreadable out of orbax's view."""
    moved = False
    for step in sorted(s for s in self._unreadable if s >= min_step):
      src = os.path.join(self.directory, str(step))
      if os.path.isdir(src):
        dst = f"{src}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(src, dst)
        log.warning("moved unreadable checkpoint step %d aside to %s", step, dst)
        moved = True
      self._unreadable.discard(step)
    if moved:
      self._manager.reload()

  def close(self) -> None:
    """Waits for pending work and releases the manager."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
