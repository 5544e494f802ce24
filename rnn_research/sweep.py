"""Run every member of an ablation sweep, resumably (rnn_research/experiments/sweep_runner.py).

  python -m rnn_research.sweep --config=configs/ablations/norm_placement.py --workdir=runs/norm \
      [--parallel=2] [--dry_run] [--only=REGEX] [--seeds_mode=auto|vmap|processes] \
      [--config.<key>=<value> ...] [--rerun_changed] [--rerun_stale | --allow_stale] \
      [--noworkers] [--backend=local|ray --ray_address=ADDR]

Each member trains as `python -m rnn_research.main` would, writing `--workdir/<member name>`
(`--dry_run` prints these commands): locally in a worker process per slot that trains its
members one after another (`--noworkers`: one `main` process per member), on Ray as a `main`
process each. Rerunning skips what is done and resumes the rest.
`--config.<key>=<value>` overrides a key of every member (e.g. `--config.train.steps=20` for a
smoke test); a member that sets the key too is refused. A member whose run on disk was trained
with another config than the sweep file now gives it stops the sweep before anything runs;
`--rerun_changed` moves such runs to `<workdir>.replaced-<time>/` and trains them afresh. A
member whose run trained under other model, task or trainer code than there is now
(status.json's `code`) stops it too: `--rerun_stale` moves such runs aside and trains them
afresh, `--allow_stale` keeps them (finished ones are skipped, the others resume).
SIGINT/SIGTERM stop the running members (they save a checkpoint), print the summary and exit.
Exit code: 0 when no member failed, 1 otherwise, 2 bad input, 128 + the signal when stopped.
"""
import sys

from absl import app, flags

from rnn_research.cli import parse_flags
from rnn_research.experiments import sweep_runner

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Sweep file, configs/ablations/<x>.py[:arg].")
flags.DEFINE_string("workdir", None, "Directory of the sweep: one subdirectory per member.")
flags.DEFINE_integer("parallel", 1, "Members run at once, each pinned to its share of the cores.")
flags.DEFINE_bool("dry_run", False, "List members and their commands; train nothing.")
flags.DEFINE_string("only", None, "Run only members whose name matches this regex.")
flags.DEFINE_enum("seeds_mode", "auto", ["auto", "vmap", "processes"],
                  "Train members that differ only in train.seed as one vmapped program "
                  "(vmap), as separate processes, or per backend (auto: vmap off CPU).")
flags.DEFINE_bool("rerun_changed", False, "Move the runs of members whose config changed "
                  "since they ran to <workdir>.replaced-<time>/ and train them afresh.")
flags.DEFINE_bool("rerun_stale", False, "Move the runs of members trained under other model, "
                  "task or trainer code than there is now aside, as --rerun_changed does, and "
                  "train them afresh.")
flags.DEFINE_bool("allow_stale", False, "Keep the runs of members trained under other code: "
                  "skip the finished ones, resume the others under the code there is now.")
flags.DEFINE_enum("backend", "local", ["local", "ray"], "Where members run.")
flags.DEFINE_bool("workers", True, "Train each slot's members one after another in one process "
                  "that stays up (--noworkers: a `main` process per member).")
flags.DEFINE_string("ray_address", None, "Ray cluster address for --backend=ray ('auto', "
                    "'ray://host:10001'); none starts a local Ray instance.")
flags.mark_flags_as_required(["config", "workdir"])
OVERRIDES: list[str] = []  # the `key=value` of each --config.<key>=<value>, in order


def parse(argv: list[str]) -> list[str]:
  """Takes the `--config.<key>=<value>` overrides out of argv (into OVERRIDES), then parses
  the rest as absl does (a bad flag: one line and exit code 2)."""
  rest = [argv[0]]
  for arg in argv[1:]:
    if arg.startswith("--config.") and "=" not in arg:
      print(f"bad input: {arg}: write an override as --config.<key>=<value>", file=sys.stderr)
      sys.exit(2)
    if arg.startswith("--config."):
      OVERRIDES.append(arg[len("--config."):])
    else:
      rest.append(arg)
  return parse_flags(rest)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sweep_runner.use_cpu()
  try:
    counts = sweep_runner.run_sweep(
        FLAGS.config, FLAGS.workdir, parallel=FLAGS.parallel, dry_run=FLAGS.dry_run,
        only=FLAGS.only, seeds_mode=FLAGS.seeds_mode, backend=FLAGS.backend,
        ray_address=FLAGS.ray_address, overrides=tuple(OVERRIDES),
        rerun_changed=FLAGS.rerun_changed, rerun_stale=FLAGS.rerun_stale,
        allow_stale=FLAGS.allow_stale, workers=FLAGS.workers)
  except ValueError as err:  # SweepError included
    print(f"bad input: {err}", file=sys.stderr)
    sys.exit(2)
  except sweep_runner.Interrupted as err:  # the summary is printed
    sys.exit(128 + err.signum)
  sys.exit(1 if counts.get("failed") else 0)


if __name__ == "__main__":
  app.run(main, flags_parser=parse)
