"""Train one model from a config file.

  python -m rnn_research.main --config=configs/default.py --workdir=runs/demo \
      [--config.model.cell=lstm ...] [--overwrite]

Exit codes: 0 done (or preempted by SIGTERM after saving), 2 bad input, 3 diverged.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rnn_research import train
from rnn_research.cli import parse_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for config.json, events, checkpoints, status.")
flags.DEFINE_bool("overwrite", False, "Move a different run in --workdir aside and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, FLAGS.overwrite)
  except train.Diverged as err:
    logging.error("%s", err)
    sys.exit(3)
  except ValueError as err:
    logging.error("bad input: %s", err)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
