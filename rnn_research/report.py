"""Run the report's sweeps and render docs/REPORT.md (rnn_research/experiments/report.py).

  python -m rnn_research.report --workdir=runs/report [--parallel=2] [--only=REGEX] [--no_run] \
      [--rerun_changed] [--rerun_stale] [--allow_stale]

A sweep on disk is reused only where its sweep file still gives every member the config it ran
with; otherwise the report stops (exit 2) unless --rerun_changed moves the changed members' old
runs aside and trains them again. Likewise a sweep with runs trained under other model, task or
trainer code (status.json's `code`): --rerun_stale retrains them, --allow_stale renders the
section marked STALE. Exit code 2 for bad input (an --only that matches no section, a changed,
stale or invalid sweep), 1 when a member failed, 128 + the signal when stopped.
"""
import sys

from absl import app, flags

from rnn_research.cli import parse_flags
from rnn_research.experiments import report, sweep_runner

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory of the sweeps: one subdirectory per section.")
flags.DEFINE_integer("parallel", 2, "Members run at once (see rnn_research.sweep).")
flags.DEFINE_string("only", None, "Run only the sections whose key matches (the report shows "
                    "every section on disk).")
flags.DEFINE_bool("no_run", False, "Train nothing: rebuild the report from what is on disk.")
flags.DEFINE_string("docs", "docs", "Where REPORT.template.md is and REPORT.md goes.")
flags.DEFINE_bool("rerun_changed", False, "Retrain the members whose config changed since "
                  "they ran (their old runs are moved aside; see rnn_research.sweep).")
flags.DEFINE_bool("rerun_stale", False, "Retrain the runs trained under other model, task or "
                  "trainer code than there is now (their old runs are moved aside).")
flags.DEFINE_bool("allow_stale", False, "Render sweeps with such stale runs anyway, each "
                  "section marked STALE.")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    sections = report.select(FLAGS.only)
    if FLAGS.no_run and FLAGS.rerun_stale:
      raise ValueError("--rerun_stale trains and --no_run trains nothing; drop one of them "
                       "(--allow_stale renders stale sweeps without training)")
  except ValueError as err:
    print(f"bad input: {err}", file=sys.stderr)
    sys.exit(2)
  if not FLAGS.no_run:
    sweep_runner.use_cpu()
  try:
    path = report.make_report(FLAGS.workdir, FLAGS.docs, FLAGS.parallel, sections,
                              run=not FLAGS.no_run, rerun_changed=FLAGS.rerun_changed,
                              rerun_stale=FLAGS.rerun_stale, allow_stale=FLAGS.allow_stale)
  except sweep_runner.Interrupted as err:  # the sweep printed its summary
    sys.exit(128 + err.signum)
  except RuntimeError as err:
    print(f"report: {err}", file=sys.stderr)
    sys.exit(2 if isinstance(err, report.BadSweep) else 1)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
