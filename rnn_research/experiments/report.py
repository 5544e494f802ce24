"""The lecture's claims, measured: run (or reuse) the shipped sweeps and regenerate docs/REPORT.md.

  python -m rnn_research.report --workdir=runs/report [--parallel=2] [--only=REGEX] [--no_run]

For each entry of `SECTIONS` the sweep runs in `<workdir>/<key>/` as a `rnn_research.experiments.sweep_runner`
process (resumably: a finished sweep is reused as it is), `compare` writes its table and
figure to `docs/report/<key>/`, and every `{{table:<key>}}`, `{{figure:<key>}}` and
`{{wall:<key>}}` in `docs/REPORT.template.md` is filled in, together with `{{command}}`, `{{commit}}`, `{{total_wall}}` and `{{date}}`, giving
`docs/REPORT.md`. The prose around the tables (the claims and whether our numbers support them)
lives in the template and is written by people; this module only refreshes the measurements.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from absl import app, flags

from rnn_research.cli import parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory of the sweeps: one subdirectory per section.")
flags.DEFINE_integer("parallel", 2, "Members run at once (see rnn_research.experiments.sweep_runner).")
flags.DEFINE_string("only", None, "Run only the sections whose key matches (the report shows "
                    "every section on disk).")
flags.DEFINE_bool("no_run", False, "Train nothing: rebuild the report from what is on disk.")
flags.DEFINE_string("docs", "docs", "Where REPORT.template.md is and REPORT.md goes.")
flags.mark_flags_as_required(["workdir"])


@dataclass(frozen=True)
class Section:
  """One table of the report: a metric of one sweep, run in `<workdir>/<sweep or key>/`."""
  key: str
  config: str  # sweep file[:arg]
  metric: str
  group_by: tuple[str, ...] = ()
  threshold: float | None = None
  mode: str = "auto"  # compare's min|max|auto: which end of the metric is "best"
  sweep: str | None = None  # another section's directory, to table a second metric of it
  ylim: tuple[float, float] | None = None  # the figure's y range

  @property
  def directory(self) -> str:
    return self.sweep or self.key


SECTIONS = (
    Section("activations", "configs/ablations/activations.py", "eval/mse_over_chance",
            ylim=(0.0, 2.0)),
    Section("activations_grad_peak", "configs/ablations/activations.py", "grad/global_norm",
            mode="max", sweep="activations"),
    Section("clipping", "configs/ablations/clipping.py", "eval/mse_over_chance",
            ylim=(0.0, 1.5)),
    Section("norm_placement", "configs/ablations/norm_placement.py", "eval/mse_over_chance",
            ylim=(0.0, 2.0)),
    Section("norm_placement_tanh", "configs/ablations/norm_placement.py:tanh",
            "eval/mse_over_chance", ylim=(0.0, 2.0)),
    Section("norm_placement_kalman", "configs/ablations/norm_placement.py:kalman",
            "eval/mse_over_kalman", ylim=(0.95, 1.5)),
    Section("skips", "configs/ablations/skips.py", "eval/mse_over_chance", ylim=(0.0, 1.5)),
    Section("skips_grad_flow", "configs/ablations/skips.py",
            "grad_flow/ratio_first_last/layer_0", mode="max", sweep="skips"),
    Section("lstm_variants", "configs/ablations/lstm_variants.py", "eval/mse_over_chance",
            threshold=0.05),
    Section("transition_pendulum", "configs/ablations/transition.py:pendulum",
            "eval/mse_over_ekf"),
    Section("transition_kalman", "configs/ablations/transition.py:kalman",
            "eval/mse_over_kalman"),
)
TIMES = "report_times.json"  # wall seconds each sweep spent training, summed over reruns


def _times(workdir: str) -> dict[str, float]:
  try:
    with open(os.path.join(workdir, TIMES)) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def _commit() -> str:
  out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                       check=False)
  dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True, check=False).stdout.strip()
  return (out.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


_SUMMARY = re.compile(r"sweep .*: (\d+) completed, (\d+) diverged, (\d+) failed.*"
                      r"\((\d+) skipped as done\)")


def run_sweep_process(config: str, workdir: str, parallel: int) -> tuple[int, str]:
  """Runs `python -m rnn_research.sweep` (its output passed through); (exit code, summary)."""
  argv = [sys.executable, "-m", "rnn_research.sweep", f"--config={config}",
          f"--workdir={workdir}", f"--parallel={parallel}"]
  print("$ " + " ".join(argv), flush=True)
  summary = ""
  with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
    for line in proc.stdout:
      print(line, end="", flush=True)
      summary = line if _SUMMARY.search(line) else summary
  return proc.returncode, summary


def run_sections(workdir: str, sections: list[Section], parallel: int) -> None:
  """Runs each section's sweep (skipping what is done) and adds its wall time to TIMES."""
  configs = {}
  for s in sections:  # one sweep per directory (tables of the same sweep share it)
    configs.setdefault(s.directory, s.config)
  for key, config in configs.items():
    started = time.time()
    code, summary = run_sweep_process(config, os.path.join(workdir, key), parallel)
    found = _SUMMARY.search(summary)
    if found:
      completed, diverged, failed, skipped = (int(g) for g in found.groups())
      if skipped < completed + diverged + failed:  # something trained: its time counts
        times = _times(workdir)
        times[key] = times.get(key, 0.0) + time.time() - started
        with open(os.path.join(workdir, TIMES), "w") as f:
          json.dump(times, f, indent=2)
    if code != 0 or not found:
      raise RuntimeError(f"{key}: the sweep exited with code {code} "
                         f"({summary.strip() or 'no summary'}); see {workdir}/{key}/logs/ and "
                         "rerun to retry")


def render(workdir: str, docs: str, sections: list[Section], command: str) -> str:
  """Fills the template's placeholders from the sweeps on disk; returns REPORT.md's text."""
  from rnn_research.experiments import compare

  with open(os.path.join(docs, "REPORT.template.md"), encoding="utf-8") as f:
    text = f.read()
  times = _times(workdir)
  fills = {"command": command, "commit": _commit(),
           "date": datetime.date.today().isoformat(),
           "total_wall": f"{sum(times.values()) / 60:.0f} minutes"}
  for s in sections:
    out = os.path.join(docs, "report", s.key)
    if not os.path.isdir(os.path.join(workdir, s.directory)):
      fills[f"table:{s.key}"] = f"*(not run yet: `python -m rnn_research.report --only={s.key}`)*"
      fills[f"figure:{s.key}"] = fills[f"wall:{s.key}"] = ""
      continue
    table = compare.report(os.path.join(workdir, s.directory), s.metric,
                           list(s.group_by) or None, s.threshold, s.mode, out, s.ylim)
    fills[f"table:{s.key}"] = table.rsplit("\n\nmetric:", 1)[0]
    fills[f"figure:{s.key}"] = f"![{s.key}](report/{s.key}/compare.png)"
    fills[f"wall:{s.key}"] = (f"{times[s.directory] / 60:.1f} min" if s.directory in times
                              else "not timed")
  missing = sorted({m for m in re.findall(r"\{\{([^}]+)\}\}", text)} - set(fills))
  if missing:
    raise ValueError(f"REPORT.template.md uses placeholders nobody fills: {missing}")
  return re.sub(r"\{\{([^}]+)\}\}", lambda m: fills[m.group(1)], text)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    sections = [s for s in SECTIONS if not FLAGS.only or re.search(FLAGS.only, s.key)]
  except re.error as err:
    sections, FLAGS.only = [], f"{FLAGS.only} ({err})"
  if not sections:
    print(f"bad input: --only={FLAGS.only!r} matches no section; sections: "
          f"{', '.join(s.key for s in SECTIONS)}", file=sys.stderr)
    sys.exit(2)
  if not FLAGS.no_run:
    run_sections(FLAGS.workdir, sections, FLAGS.parallel)
  command = f"python -m rnn_research.report --workdir={FLAGS.workdir} --parallel={FLAGS.parallel}"
  text = render(FLAGS.workdir, FLAGS.docs, list(SECTIONS), command)
  with open(os.path.join(FLAGS.docs, "REPORT.md"), "w", encoding="utf-8") as f:
    f.write(text)
  print(f"wrote {os.path.join(FLAGS.docs, 'REPORT.md')}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
