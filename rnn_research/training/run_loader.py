"""A trained run, read back: its config, its task and its model from the latest checkpoint.

  config = load_config(workdir)             # config.json, before anything is built
  task, model = load_model(workdir, config) # model in eval mode (no dropout, running stats)

Used by the tools that run a trained model (`sample`, `rollout`); both refuse a wrong run from
its config first, then build. A run without a readable config or checkpoint is a ValueError
naming the path; when no checkpoint step can be read, the error (which lists each step's) is
all that is reported: the log lines of the failed reads are held back and dropped, and shown
only when an older step was read after all.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Iterator

import ml_collections
from flax import nnx

from rnn_research.training import train
from rnn_research.training.checkpointing import Checkpointer, CheckpointsUnreadableError


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's `config.json` as a ConfigDict (ValueError if it is missing or unreadable)."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except FileNotFoundError:
    raise ValueError(f"no run in {workdir}: {path} does not exist") from None
  except (OSError, ValueError) as err:
    raise ValueError(f"{path} is unreadable: {type(err).__name__}: {err}") from None


@contextlib.contextmanager
def _logs_held() -> Iterator[None]:
  """Holds the log records that reach the root logger's handlers inside (from any thread) and
  replays them on a normal exit only."""
  held: list[logging.LogRecord] = []

  def hold(record: logging.LogRecord) -> bool:
    held.append(record)
    return False

  handlers = list(logging.getLogger().handlers)
  for handler in handlers:
    handler.addFilter(hold)
  try:
    yield
  finally:
    for handler in handlers:
      handler.removeFilter(hold)
  for record in held:
    logging.getLogger(record.name).handle(record)


def load_model(workdir: str, config: ml_collections.ConfigDict) -> tuple[object, nnx.Module]:
  """(task, model in eval mode) of `config` with the latest readable checkpoint's weights."""
  task, graphdef, state, _ = train.init_state(config)
  try:
    with _logs_held():
      restored = Checkpointer(os.path.join(workdir, "checkpoints")).restore(state)
  except CheckpointsUnreadableError as err:
    raise ValueError(str(err)) from None
  if restored is None:
    raise ValueError(f"no checkpoint in {workdir}/checkpoints (train the run first)")
  state = restored[1]
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  return task, model
