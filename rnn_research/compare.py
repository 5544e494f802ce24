"""Compare the runs of a sweep directory (rnn_research/experiments/compare.py).

  python -m rnn_research.compare runs/sweep [--metric=TAG] [--group_by=model.norm]
      [--threshold=0.5] [--mode=auto|min|max] [--baseline=GROUP] [--log] [--importance]
      [--out=DIR] [--ylim=lo,hi]

DIR is a sweep directory or one run's. --metric defaults to the sweep file's get_metric(), else
the task's main metric (e.g. eval/mse_over_kalman); --baseline to the sweep file's
get_baseline() (both recorded in sweep.json). Prints the markdown tables (per group; against the
baseline: difference, 95% CI, Hedges' g, Holm-adjusted p, verdict; with --importance each
axis' share of the variance; under them the commits the runs trained at and how many are
stale, trained under other code than there is now) and writes `<out>/compare.md`,
`<out>/compare.png` (curves, 95% CI bands) and `<out>/compare_final.png` (final values per
seed); never imports jax, so it works on a sweep that is still running. Exit code 2 on bad
input.
"""
import logging
import sys

from absl import app, flags

from rnn_research.cli import parse_flags
from rnn_research.experiments import compare

FLAGS = flags.FLAGS
flags.DEFINE_string("metric", None, "Scalar tag to compare (default: the task's main metric, "
                    "e.g. eval/mse_over_kalman; eval/loss for runs of several tasks).")
flags.DEFINE_list("group_by", None, "Dotted config keys whose values form the groups.")
flags.DEFINE_float("threshold", None, "Also report the steps each group takes to reach this.")
flags.DEFINE_enum("mode", "auto", ["auto", "min", "max"],
                  "Whether lower (min) or higher (max) is better; auto: the task's for its main "
                  "metric, else max for accuracies.")
flags.DEFINE_string("baseline", None, "Group to test every other group against (default: the "
                    "sweep file's get_baseline(), from sweep.json; none: the per-group table only).")
flags.DEFINE_bool("log", False, "Compare log(metric): ratios of geometric means (for ratio "
                  "metrics such as eval/mse_over_kalman).")
flags.DEFINE_bool("importance", False, "Also print each axis' (and pair of axes') share of the "
                  "final metric's variance (functional ANOVA; a surrogate off a full grid).")
flags.DEFINE_string("out", None, "Directory for compare.md and compare.png (default: DIR).")
flags.DEFINE_list("ylim", None, "lo,hi: the figure's y range (default: every value).")


def _ylim(values: list[str] | None) -> tuple[float, float] | None:
  """--ylim as (lo, hi); ValueError unless two numbers with lo < hi."""
  if values is None:
    return None
  try:
    ylim = tuple(float(v) for v in values)
  except ValueError:
    ylim = ()
  if len(ylim) != 2 or not ylim[0] < ylim[1]:
    raise ValueError(f"--ylim must be lo,hi with lo < hi, got {','.join(values)!r}")
  return ylim


def main(argv: list[str]) -> None:
  logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its reader logs every file
  try:
    if len(argv) != 2:
      raise ValueError("give one sweep or run directory: python -m rnn_research.compare DIR")
    text = compare.report(argv[1], FLAGS.metric, FLAGS.group_by, FLAGS.threshold, FLAGS.mode,
                          FLAGS.out, _ylim(FLAGS.ylim), FLAGS.baseline, FLAGS.log,
                          FLAGS.importance)
  except ValueError as err:
    print(f"bad input: {err}", file=sys.stderr)
    sys.exit(2)
  print(text, end="")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
