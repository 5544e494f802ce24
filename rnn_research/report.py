"""Run the report's sweeps and render docs/REPORT.md (rnn_research/experiments/report.py).

  python -m rnn_research.report --workdir=runs/report [--parallel=2] [--only=REGEX] [--no_run]

Exit code 2 when --only matches no section.
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
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    sections = report.select(FLAGS.only)
  except ValueError as err:
    print(f"bad input: {err}", file=sys.stderr)
    sys.exit(2)
  if not FLAGS.no_run:
    sweep_runner.use_cpu()
  path = report.make_report(FLAGS.workdir, FLAGS.docs, FLAGS.parallel, sections,
                            run=not FLAGS.no_run)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
