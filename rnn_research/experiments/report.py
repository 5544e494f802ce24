"""The lecture's claims, measured: run (or reuse) the shipped sweeps and regenerate docs/REPORT.md.

For each entry of `SECTIONS` the sweep runs in `<workdir>/<key>/` through
`sweep_runner.run_sweep` (resumably: a finished sweep is reused as it is, unless its sweep file
now gives a member another config than the one it ran with: that stops the report unless
`rerun_changed` moves the old runs aside and trains them again), `compare` writes its
table and figure to `docs/report/<key>/`, and every `{{table:<key>}}`, `{{figure:<key>}}` and
`{{wall:<key>}}` in `docs/REPORT.template.md` is filled in, together with `{{command}}`,
`{{commit}}`, `{{total_wall}}` and `{{date}}`, giving `docs/REPORT.md`. The prose around the
tables (the claims and whether our numbers support them) lives in the template and is written
by people; this module only refreshes the measurements. The command line is
`python -m rnn_research.report` (rnn_research/report.py).
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

from rnn_research.experiments.sweep_runner import OUTCOMES, Interrupted, run_sweep
from rnn_research.training import atomic


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


class BadSweep(RuntimeError):
  """A section's sweep had bad input (a changed member included); nothing of it ran."""


def run_sections(workdir: str, sections: list[Section], parallel: int,
                 rerun_changed: bool = False) -> None:
  """Runs each section's sweep (skipping what is done) and adds its wall time to TIMES.

  One sweep per directory (tables of the same sweep share it), each printing what it does. A
  sweep with bad input (nothing ran: BadSweep) or a failed member (its time is recorded)
  raises RuntimeError, a signal Interrupted (its time is recorded); the later ones do not run.
  """
  configs: dict[str, str] = {}
  for s in sections:
    configs.setdefault(s.directory, s.config)
  for key, config in configs.items():
    directory = os.path.join(workdir, key)
    print(f"$ {sys.executable} -m rnn_research.sweep --config={config} --workdir={directory} "
          f"--parallel={parallel}" + (" --rerun_changed" if rerun_changed else ""), flush=True)
    started = time.time()
    try:
      counts = run_sweep(config, directory, parallel=parallel, rerun_changed=rerun_changed)
    except ValueError as err:  # SweepError included: nothing ran
      raise BadSweep(f"{key}: bad input: {err}") from err
    except Interrupted as err:
      _add_time(workdir, key, err.counts, started)
      raise
    _add_time(workdir, key, counts, started)
    if counts["failed"]:
      raise RuntimeError(f"{key}: {counts['failed']} member(s) of the sweep failed; see "
                         f"{directory}/logs/ and rerun to retry")


def _add_time(workdir: str, key: str, counts: dict[str, int], started: float) -> None:
  if sum(counts[o] for o in OUTCOMES) > counts["skipped"]:  # something trained: it counts
    times = _times(workdir)
    times[key] = times.get(key, 0.0) + time.time() - started
    atomic.write_json(os.path.join(workdir, TIMES), times)


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


def select(only: str | None) -> list[Section]:
  """The SECTIONS whose key matches the regex `only` (every one if None); ValueError if none."""
  try:
    sections = [s for s in SECTIONS if not only or re.search(only, s.key)]
  except re.error as err:
    sections, only = [], f"{only} ({err})"
  if not sections:
    raise ValueError(f"--only={only!r} matches no section; sections: "
                     f"{', '.join(s.key for s in SECTIONS)}")
  return sections


def make_report(workdir: str, docs: str, parallel: int, sections: list[Section] | None = None,
                run: bool = True, rerun_changed: bool = False) -> str:
  """Runs `sections`' sweeps (unless not `run`), then writes `docs`/REPORT.md from every
  section on disk; returns its path."""
  if run:
    run_sections(workdir, list(SECTIONS if sections is None else sections), parallel,
                 rerun_changed)
  command = f"python -m rnn_research.report --workdir={workdir} --parallel={parallel}"
  path = os.path.join(docs, "REPORT.md")
  atomic.write_text(path, render(workdir, docs, list(SECTIONS), command))
  return path
