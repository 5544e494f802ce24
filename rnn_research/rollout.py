"""Closed-loop rollouts of a trained `pendulum` or `temperature` run, plotted against the truth
beside the task's filter (lecture 5.1: a filter run as a simulator).

  python -m rnn_research.rollout --workdir=runs/pendulum --warmup=50 --horizon=30 \
      --num_rollouts=8 --seed=0 [--out=runs/pendulum/rollout.png]

K held-out sequences (a seeded draw) run as one batch through the streaming API in one jitted
`lax.scan`: for the first W steps the model reads the real inputs (it filters), then for N
steps its own output is fed back as the next input. temperature: the forecast x_hat_{t+1} is
the input at t + 1; beside it persistence (the last observed value held). pendulum: the
estimated (sin th_hat_t, cos th_hat_t), projected on the circle, is the next observation (the
noise-free observation the model believes in); beside it the EKF updated through the warm-up,
then prediction-only (its own closed loop). The math: `training/rollout.py`.

Output: per rollout the MSE over the N horizon steps (mean over the outputs) of the model and
of the filter, then their means over rollouts with 95 % t intervals; the PNG (default
<workdir>/rollout.png): one panel per rollout (the first 4), truth, model and filter over time,
the warm-up's end marked. Exit 2 with one line `bad input: ...` for a bad flag or run (not a
pendulum or temperature run, a bidirectional model, no readable checkpoint, W + N longer than
the held-out sequences), writing nothing.
"""
import os
import sys

from absl import app, flags

from rnn_research.cli import parse_flags
from rnn_research.experiments.stats import mean_ci
from rnn_research.training import rollout, rollout_plot

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A pendulum or temperature run's directory.")
flags.DEFINE_integer("warmup", 50, "W: steps that read the real inputs (>= 1).")
flags.DEFINE_integer("horizon", 30, "N: steps that read the model's own output (>= 1; "
                     "W + N <= the held-out sequence length).")
flags.DEFINE_integer("num_rollouts", 4, "K: held-out sequences rolled out, as one batch (>= 1).")
flags.DEFINE_integer("seed", 0, "Seed of the draw of the K held-out sequences.")
flags.DEFINE_string("out", None, "PNG to write (default: <workdir>/rollout.png).")
flags.mark_flags_as_required(["workdir"])


def summary(result: rollout.Rollout) -> list[str]:
  """The printed report: one line per rollout, then the means with their 95 % t intervals."""
  name = result.filter_name
  model, baseline = result.horizon_mse(result.model), result.horizon_mse(result.filter)
  lines = [f"{result.task}: {len(result.rows)} rollouts, warm-up {result.warmup}, horizon "
           f"{result.truth.shape[1] - result.warmup}; MSE over the horizon",
           f"{'sequence':>8}  {'model':>10}  {name:>11}"]
  lines += [f"{row:>8}  {m:>10.4g}  {b:>11.4g}" for row, m, b in zip(result.rows, model, baseline)]
  for label, values in (("model", model), (name, baseline)):
    mean, half = (float(v) for v in mean_ci(values))
    interval = (f"[{mean - half:.4g}, {mean + half:.4g}]" if half == half
                else "(one rollout: no interval)")
    lines.append(f"mean {label} MSE: {mean:.4g}, 95% CI {interval}")
  return lines


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out = FLAGS.out or os.path.join(FLAGS.workdir, "rollout.png")
  try:
    result = rollout.run(FLAGS.workdir, FLAGS.warmup, FLAGS.horizon, FLAGS.num_rollouts,
                         FLAGS.seed)
  except ValueError as err:
    print(f"bad input: {err}", file=sys.stderr)
    sys.exit(2)
  rollout_plot.write_png(result, out)
  print("\n".join(summary(result) + [f"plot: {out}"]))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
