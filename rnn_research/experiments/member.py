"""Training runs as `python -m rnn_research.main` trains them, returning its exit code.

`train_runs` is shared by `main` and by the sweep's workers (worker.py), so a member trained in
a worker ends with the code, the log lines and the files that `main` gives it.
"""
from __future__ import annotations

import ml_collections
from absl import logging


def train_runs(configs: list[ml_collections.ConfigDict], workdirs: list[str],
               overwrite: bool = False) -> int:
  """Trains `configs[k]` into `workdirs[k]` (several: seeds of one model, vmapped) and returns
  the exit code of `main`: 0 done (or preempted after saving), 2 bad input (logged as one
  line), 3 diverged, 130 interrupted before the loop (the last checkpoint stays)."""
  import jax  # deferred: a worker imports this module before its first member

  from rnn_research.training import lock, train
  try:
    for workdir in workdirs if jax.process_index() == 0 else ():  # the writing process
      lock.check_free(workdir)  # a busy workdir fails at once, before the model is built
    train.train_seeds(configs, workdirs, overwrite)
  except train.Diverged as err:
    logging.error("%s", err)
    return 3
  except KeyboardInterrupt:  # before the loop, or a second Ctrl-C: the last checkpoint stays
    logging.warning("interrupted; rerun the same command to resume from the last checkpoint")
    return 130
  except ValueError as err:
    logging.error("bad input: %s", err)
    return 2
  return 0
