"""Train one model from a config file.

  python -m rnn_research.main --config=configs/default.py --workdir=runs/demo \
      [--config.model.cell=lstm ...] [--overwrite]

`--seeds=0,1,2` trains one run per seed as a single vmapped program; each writes its own
`--workdir` with `{seed}` filled in (e.g. `--workdir=runs/demo/seed={seed}`).
`--multihost` calls `jax.distributed.initialize()` first (one process per host, for
`--config.train.data_parallel=True` across hosts).

One process writes a workdir at a time (`training/lock.py`): a second one exits 2 naming the
first. A run already completed at `train.steps` is reported and left as it is.

Exit codes: 0 done (or preempted by SIGTERM or Ctrl-C after saving), 2 bad input, 3 diverged
(a non-finite loss or one above `train.max_loss`).
"""
import copy
import sys

from absl import app, flags, logging

from rnn_research.cli import define_config_flag, parse_flags
from rnn_research.experiments.member import train_runs
from rnn_research.training import data_parallel

FLAGS = flags.FLAGS
define_config_flag("config", "Config file (configs/*.py[:arg]), from any directory.")
flags.DEFINE_string("workdir", None, "Directory for config.json, events, checkpoints, status.")
flags.DEFINE_bool("overwrite", False, "Move a different run in --workdir aside and start afresh.")
flags.DEFINE_list("seeds", None, "Train these train.seed values together (vmapped); --workdir "
                  "must contain {seed}.")
flags.DEFINE_bool("multihost", False, "jax.distributed.initialize() before training.")
flags.mark_flags_as_required(["config", "workdir"])


def _per_seed(config, seeds: list[str], workdir: str):
  """One config and workdir per seed of `--seeds`."""
  if "{seed}" not in workdir:
    raise ValueError(f"--seeds needs {{seed}} in --workdir (got {workdir!r}), so that every "
                     "seed gets its own run directory")
  try:
    values = [int(s) for s in seeds]
  except ValueError:
    raise ValueError(f"--seeds must be integers, got {','.join(seeds)!r}") from None
  configs = []
  for seed in values:
    c = copy.deepcopy(config)
    c.train.seed = seed
    configs.append(c)
  return configs, [workdir.replace("{seed}", str(s)) for s in values]


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.multihost:
    data_parallel.initialize_multihost()
  if FLAGS.seeds is None:
    configs, workdirs = [FLAGS.config], [FLAGS.workdir]
  else:
    try:
      configs, workdirs = _per_seed(FLAGS.config, FLAGS.seeds, FLAGS.workdir)
    except ValueError as err:
      logging.error("bad input: %s", err)
      sys.exit(2)
  sys.exit(train_runs(configs, workdirs, FLAGS.overwrite))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
