"""The lecture's claims, measured: run (or reuse) the shipped sweeps and regenerate docs/REPORT.md.

For each entry of `SECTIONS` the sweep runs in `<workdir>/<key>/` through
`sweep_runner.run_sweep` (resumably: a finished sweep is reused as it is, unless its sweep file
now gives a member another config than the one it ran with: that stops the report unless
`rerun_changed` moves the old runs aside and trains them again), `compare` writes its
table and figure to `docs/report/<key>/`, and every `{{table:<key>}}`, `{{figure:<key>}}`,
`{{wall:<key>}}`, `{{trained:<key>}}` (the commits its runs trained at), `{{samples:<key>}}`
and `{{per_step:<key>}}` (report_samples.py and report_filtering.py, for sections that ask for
them) in `docs/REPORT.template.md` is filled in,
together with `{{command}}`, `{{commit}}`, `{{total_wall}}`, `{{wall_table}}` (each sweep's wall
time and commits) and `{{date}}`, giving `docs/REPORT.md`. The prose around the
tables (the claims and whether our numbers support them) lives in the template and is written
by people; this module only refreshes the measurements. The command line is
`python -m rnn_research.report` (rnn_research/report.py).

A run is stale unless its status.json records that it trained under the current code only
(`code` == [provenance.code_fingerprint()]). A sweep on disk with stale runs stops the report
before anything runs or is written (BadSweep), unless `rerun_stale` moves those runs aside
(as `rerun_changed` does) and trains them again, or `allow_stale` renders the section under a
loud STALE line.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from typing import Iterable

from rnn_research.experiments import sweep_changes
from rnn_research.experiments.report_sections import SECTIONS, Section
from rnn_research.experiments.stale_runs import Trained, trained
from rnn_research.experiments.sweep_runner import OUTCOMES, Interrupted, run_sweep
from rnn_research.training import atomic, provenance


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


def _minutes(seconds: float) -> str:
  """Wall seconds as minutes to the tenth, as the report gives every wall time."""
  return f"{seconds / 60:.1f}"


class BadSweep(RuntimeError):
  """A section's sweep had bad input (a changed or stale member included); nothing of it ran."""


def stale_sweeps(workdir: str, sections: Iterable[Section], code: str) -> dict[str, Trained]:
  """{sweep directory: Trained} of the sections' sweeps on disk that hold stale runs."""
  found = {d: trained(os.path.join(workdir, d), code) for d in {s.directory for s in sections}}
  return {d: found[d] for d in sorted(found) if found[d].stale}


def describe_stale(workdir: str, stale: dict[str, Trained], code: str) -> str:
  """The error that stops the report at stale sweeps: each sweep, its runs and commits."""
  lines = [f"{d}: {len(t.stale)} of {t.runs} run(s), trained at {t.stale_commits}"
           for d, t in stale.items()]
  return (f"{len(stale)} sweep(s) in {workdir} hold runs trained under other code than "
          f"rnn_research/core, tasks and training hold now (fingerprint {code}), or that "
          "recorded none:\n  " + "\n  ".join(lines) + "\nrerun with --rerun_stale to move "
          "those runs aside to <sweep>.replaced-<time>/ and train them again (an --only must "
          "select their sections), or with --allow_stale to render them marked STALE")


def stale_line(t: Trained) -> str:
  """The loud line above a stale section's table."""
  return (f"**STALE**: {len(t.stale)} of {t.runs} runs trained at {t.stale_commits} under code "
          "that has changed since; rerun with `--rerun_stale`")


def _move_stale(workdir: str, key: str, code: str) -> None:
  """Moves the stale runs of sweep `key` aside (sweep_changes.move_aside); when that is all
  of them, its recorded wall time goes along (into the new directory's TIMES)."""
  t = trained(os.path.join(workdir, key), code)
  if not t.stale:
    return
  moved = sweep_changes.move_aside(os.path.join(workdir, key), list(t.stale))
  print(f"moved the old runs of {len(t.stale)} stale member(s) to {moved}", flush=True)
  times = _times(workdir)
  if len(t.stale) == t.runs and key in times:
    atomic.write_json(os.path.join(moved, TIMES), {key: times.pop(key)})
    atomic.write_json(os.path.join(workdir, TIMES), times)


def run_sections(workdir: str, sections: list[Section], parallel: int,
                 rerun_changed: bool = False, rerun_stale: bool = False,
                 allow_stale: bool = False) -> None:
  """Runs each section's sweep (skipping what is done) and adds its wall time to TIMES.

  One sweep per directory (tables of the same sweep share it), each printing what it does;
  with `rerun_stale`, its stale runs are moved aside first and trained again, with
  `allow_stale` they are reused as they are (sweep_runner.run_sweep). A
  sweep with bad input (nothing ran: BadSweep) or a failed member (its time is recorded)
  raises RuntimeError, a signal Interrupted (its time is recorded); the later ones do not run.
  """
  configs: dict[str, str] = {}
  for s in sections:
    configs.setdefault(s.directory, s.config)
  code = provenance.code_fingerprint() if rerun_stale else None
  for key, config in configs.items():
    directory = os.path.join(workdir, key)
    print(f"$ {sys.executable} -m rnn_research.sweep --config={config} --workdir={directory} "
          f"--parallel={parallel}" + (" --rerun_changed" if rerun_changed else "")
          + (" --allow_stale" if allow_stale else ""), flush=True)
    started = time.time()
    try:
      if code:
        _move_stale(workdir, key, code)
      counts = run_sweep(config, directory, parallel=parallel, rerun_changed=rerun_changed,
                         allow_stale=allow_stale)
    except ValueError as err:  # SweepError and WorkdirBusy included: nothing ran
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


def section_fills(workdir: str, docs: str, s: Section, text: str, times: dict[str, float],
                  code: str) -> dict[str, str]:
  """The placeholders of section `s` (table, figure, wall, trained, samples, per_step) from its
  sweep on disk; the costly samples and per-step figure only where the template `text` uses
  them."""
  from rnn_research.experiments import compare

  directory, out = os.path.join(workdir, s.directory), os.path.join(docs, "report", s.key)
  fills = {f"{name}:{s.key}": "" for name in ("figure", "wall", "trained", "samples",
                                               "per_step")}
  if not os.path.isdir(directory):
    fills[f"table:{s.key}"] = f"*(not run yet: `python -m rnn_research.report --only={s.key}`)*"
    return fills
  group_by = list(s.group_by) or None
  table = compare.report(directory, s.metric, group_by, s.threshold, s.mode, out, s.ylim,
                         log=s.log, importance=s.importance)
  t = trained(directory, code)
  fills[f"table:{s.key}"] = ((stale_line(t) + "\n\n" if t.stale else "")
                             + table.rsplit("\n\nmetric:", 1)[0].rstrip("\n"))
  fills[f"trained:{s.key}"] = t.commits
  fills[f"figure:{s.key}"] = f"![{s.key}](report/{s.key}/compare.png)"
  fills[f"wall:{s.key}"] = (f"{_minutes(times[s.directory])} min" if s.directory in times
                            else "not timed")
  used = lambda name: "{{" + f"{name}:{s.key}" + "}}" in text  # noqa: E731
  if s.samples and used("samples"):  # (jax: imported only where needed)
    from rnn_research.experiments import report_samples
    fills[f"samples:{s.key}"] = report_samples.markdown(directory, group_by)
  if s.per_step and used("per_step"):
    from rnn_research.experiments import report_filtering
    fills[f"per_step:{s.key}"] = report_filtering.figure(
        directory, os.path.join(out, "per_step.png"), group_by,
        link=f"report/{s.key}/per_step.png")
  return fills


def render(workdir: str, docs: str, sections: list[Section], command: str,
           code: str | None = None) -> str:
  """Fills the template's placeholders from the sweeps on disk, a sweep with runs stale
  against the fingerprint `code` (default: the current one) under a STALE line; returns
  REPORT.md's text."""
  code = code or provenance.code_fingerprint()
  with open(os.path.join(docs, "REPORT.template.md"), encoding="utf-8") as f:
    text = f.read()
  times = _times(workdir)
  fills = {"command": command, "commit": _commit(),
           "date": datetime.date.today().isoformat(),
           "total_wall": f"{_minutes(sum(times.values()))} minutes"}
  walls = ["| sweep | wall | trained at |", "|---|---|---|"]
  for s in sections:
    fills.update(section_fills(workdir, docs, s, text, times, code))
    if not s.sweep:
      wall, commits = fills[f"wall:{s.key}"], fills[f"trained:{s.key}"]
      walls.append(f"| `{s.config}` | {wall or 'not run yet'} | {commits or '–'} |")
  fills["wall_table"] = "\n".join(walls)
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
                run: bool = True, rerun_changed: bool = False, rerun_stale: bool = False,
                allow_stale: bool = False) -> str:
  """Runs `sections`' sweeps (unless not `run`), then writes `docs`/REPORT.md from every
  section on disk; returns its path. A stale sweep that `rerun_stale` does not retrain raises
  BadSweep before anything runs or is written, unless `allow_stale`."""
  selected = list(SECTIONS if sections is None else sections)
  code = provenance.code_fingerprint()
  rerun = {s.directory for s in selected} if run and rerun_stale else set()
  stale = {d: t for d, t in stale_sweeps(workdir, SECTIONS, code).items() if d not in rerun}
  if stale and not allow_stale:
    raise BadSweep(describe_stale(workdir, stale, code))
  if run:
    run_sections(workdir, selected, parallel, rerun_changed, rerun_stale, allow_stale)
  command = f"python -m rnn_research.report --workdir={workdir} --parallel={parallel}"
  path = os.path.join(docs, "REPORT.md")
  text = render(workdir, docs, list(SECTIONS), command, code)
  for d, t in stale_sweeps(workdir, SECTIONS, code).items():
    print(f"report: warning: {d} is marked STALE: {len(t.stale)} of {t.runs} run(s) trained "
          f"at {t.stale_commits} under other code", file=sys.stderr)
  atomic.write_text(path, text)
  return path
