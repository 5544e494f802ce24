"""Problems (`config.task.name`): filtering, generation, dependence probes, multiscale, variable
length. `build(cfg, batch_size, seed)` makes the task named by `cfg.name`; every task module is
imported here so that its `TASKS.register` line runs.
"""
from __future__ import annotations

from typing import Any, Mapping

from rnn_research.tasks import (adding, charlm, copy, kalman, multiscale, pendulum,  # noqa: F401
                                temperature, vowels)
from rnn_research.tasks.base import TASKS, Batch, ClassificationTask, RegressionTask, Task


def build(cfg: Mapping[str, Any], batch_size: int, seed: int) -> Task:
  """The task named `cfg["name"]`, built from its config section."""
  if "name" not in cfg:
    raise ValueError(f"config.task.name is missing; valid choices: {', '.join(TASKS.names())}")
  return TASKS.get(cfg["name"])(cfg, batch_size, seed)


__all__ = ["TASKS", "Batch", "ClassificationTask", "RegressionTask", "Task", "build"]
