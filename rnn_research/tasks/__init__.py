"""Problems (`config.task.name`): filtering, generation, dependence probes, multiscale, variable
length. `TASKS.get(name)(cfg, batch_size, seed)` makes the task named by `cfg.name`; every task
module is imported here so that its `TASKS.register` line runs.
"""
from __future__ import annotations

from rnn_research.tasks import (adding, charlm, copy, kalman, multiscale, pendulum,  # noqa: F401
                                temperature, vowels)
from rnn_research.tasks.base import (TASKS, Batch, ClassificationTask, Key, RegressionTask,
                                     Task)

__all__ = ["TASKS", "Batch", "ClassificationTask", "Key", "RegressionTask", "Task"]
