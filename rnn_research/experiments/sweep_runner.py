"""Run every member of an ablation sweep, resumably, in parallel processes or on a Ray cluster.

Each member trains as `python -m rnn_research.main --config=<sweep file>
--config.<key>=<value> ... --workdir=DIR/<member name>` would: the same files and status.json
as a run of its own (a dry run prints these commands); locally in its slot's worker
(worker.py) unless `workers` is off, on Ray as that process. Members that differ only in
`train.seed` may run as one vmapped program (`main --seeds=...`); seeds_mode `auto` does so
on accelerators and not on CPU, where it was measured slower. Rerunning skips completed and
diverged members and resumes the others from their checkpoints; a member that diverges or
fails is recorded and the sweep goes on.
Every member is checked before anything runs, and so is every run on disk: a member whose
config.json differs from what the sweep file now gives it stops the sweep, unless
`rerun_changed` moves its old run aside, and so does one trained under other code than there
is now, unless `rerun_stale` moves it aside or `allow_stale` keeps it (sweep_changes.py).
`DIR/sweep.json` lists the members; `DIR/logs/` holds each job's output. A signal stops the
sweep (launch.py): the summary is printed, then `Interrupted` is raised. The command line is
`python -m rnn_research.sweep` (rnn_research/sweep.py); where jobs run: launch.py.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import signal
import sys
import time
from typing import Any, Callable, Collection

from rnn_research.experiments import launch, sweep_changes, sweep_spec
from rnn_research.experiments.launch import Job
from rnn_research.training import atomic, provenance
from rnn_research.training.status import read_status

DONE_STATES = ("completed", "diverged")  # reruns skip these: the outcome is known
OUTCOMES = ("completed", "diverged", "failed", "preempted")


def use_cpu() -> None:
  """Makes this process's jax use the CPU: the check of the members runs here, leaving the
  accelerators to the member processes (call before anything else initialises jax)."""
  import jax
  jax.config.update("jax_platforms", "cpu")


def member_argv(swp: sweep_spec.Sweep, overrides: dict[str, Any], workdir: str) -> list[str]:
  """The `python -m rnn_research.main` command line of one member (ml_collections parses each
  override by the type of its config field)."""
  return ([sys.executable, "-m", "rnn_research.main", f"--config={swp.config_arg}"]
          + [f"--config.{k}={v}" for k, v in overrides.items()]
          + [f"--config.{text}" for text in swp.overrides] + [f"--workdir={workdir}"])


def _checkpoint_step(member_dir: str) -> int:
  try:
    return max((int(n) for n in os.listdir(os.path.join(member_dir, "checkpoints"))
                if n.isdigit()), default=0)
  except FileNotFoundError:
    return 0


def _seed_template(swp: sweep_spec.Sweep, i: int) -> str:
  """Member i's name with its seed as `{seed}` (what `main --seeds` fills in)."""
  return sweep_spec.member_names([{**swp.members[i], "train.seed": "{seed}"}]
                                 + swp.members)[0]


def plan(swp: sweep_spec.Sweep, workdir: str, indices: list[int], vmap_seeds: bool,
         fresh: Collection[int] = ()) -> tuple[list[Job], list[str]]:
  """(jobs to run, names skipped because their outcome is on disk). The members in `fresh`
  are planned as if their directories were empty (they will be moved aside)."""
  todo, skipped = [], []
  for i in indices:
    status = {} if i in fresh else read_status(os.path.join(workdir, swp.names[i]))
    steps = swp.config(i).train.steps
    if status.get("state") in DONE_STATES and (status["state"] == "diverged"
                                               or status.get("step", 0) >= steps):
      skipped.append(swp.names[i])
    else:
      todo.append(i)
  groups: dict[Any, list[int]] = {}
  for i in todo:
    key: Any = i
    if vmap_seeds and "train.seed" in swp.members[i]:
      rest = {k: v for k, v in swp.members[i].items() if k != "train.seed"}
      key = (json.dumps(rest, sort_keys=True), _seed_template(swp, i),
             0 if i in fresh else _checkpoint_step(os.path.join(workdir, swp.names[i])))
    groups.setdefault(key, []).append(i)
  jobs = []
  for members in groups.values():
    first = members[0]
    request = {"sweep": swp.config_arg, "overrides": list(swp.overrides), "indices": members,
               "workdirs": [os.path.join(workdir, swp.names[i]) for i in members]}
    if len(members) == 1:
      argv = member_argv(swp, swp.members[first], request["workdirs"][0])
    else:
      rest = {k: v for k, v in swp.members[first].items() if k != "train.seed"}
      seeds = ",".join(str(swp.members[i]["train.seed"]) for i in members)
      argv = member_argv(swp, rest, os.path.join(workdir, _seed_template(swp, first)))
      argv += [f"--seeds={seeds}"]
    jobs.append(Job([swp.names[i] for i in members], argv, request))
  return jobs, skipped


def outcome(workdir: str, name: str, returncode: int) -> tuple[str, dict[str, Any]]:
  """(state, status) of a member after its process exited with `returncode`.

  `main` exits 0 (completed or preempted) or 3 (a run diverged); anything else, or a status
  file that does not say how the run ended, is a failure.
  """
  status = read_status(os.path.join(workdir, name))
  state = status.get("state")
  if returncode in (0, 3) and state in ("completed", "diverged", "preempted"):
    return state, status
  return "failed", status


def _log_tail(path: str) -> str:
  try:
    with open(path, "rb") as f:
      lines = [l for l in f.read()[-4000:].decode(errors="replace").splitlines() if l.strip()]
  except FileNotFoundError:
    return ""
  return lines[-1].strip() if lines else ""


def select(swp: sweep_spec.Sweep, only: str | None) -> list[int]:
  """The indices of the members whose name matches the regex `only` (every one if None)."""
  indices = list(range(len(swp.members)))
  if not only:
    return indices
  try:
    pattern = re.compile(only)
  except re.error as err:
    raise ValueError(f"--only={only!r} is not a regular expression: {err}") from None
  indices = [i for i in indices if pattern.search(swp.names[i])]
  if not indices:
    raise ValueError(f"--only={only!r} matches no member; members: {', '.join(swp.names)}")
  return indices


class Interrupted(Exception):
  """A signal stopped the sweep; its running members were stopped and the summary printed."""

  def __init__(self, signum: int, counts: dict[str, int]):
    super().__init__(f"stopped by {signal.Signals(signum).name}")
    self.signum, self.counts = signum, counts


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class _Tally:
  """Counts the members per outcome and prints a line as each one ends, with the progress:
  finished/total, jobs running, failures so far and the time left (ETA: the mean job time so
  far x the jobs left / parallel)."""

  def __init__(self, workdir: str, skipped: list[str], total: int, jobs: int, parallel: int,
               out: Callable[[str], None]):
    self.workdir, self.skipped, self.total, self.out = workdir, skipped, total, out
    self.counts = dict.fromkeys(OUTCOMES, 0)
    for name in skipped:
      self.counts[read_status(os.path.join(workdir, name))["state"]] += 1
    self.finished = len(skipped)
    self.jobs_left, self.jobs_done, self.parallel, self.seconds = jobs, 0, parallel, 0.0

  def progress(self, running: int) -> str:
    """`2 running, 0 failed, ETA 4 min` (no ETA once no job is left)."""
    left = self.seconds / max(1, self.jobs_done) * self.jobs_left / self.parallel
    eta = f", ETA {_duration(left)}" if self.jobs_left else ""
    return f"{running} running, {self.counts['failed']} failed{eta}"

  def report(self, job: Job, returncode: int, seconds: float, running: int = 0) -> None:
    """The `launch.Report` of every job: records and prints each member's outcome."""
    self.jobs_left, self.jobs_done = self.jobs_left - 1, self.jobs_done + 1
    self.seconds += seconds
    for name in job.names:
      state, status = outcome(self.workdir, name, returncode)
      self.counts[state] += 1
      self.finished += 1
      detail = ", ".join(f"{k}={v:.4g}" for k, v in (status.get("metrics") or {}).items())
      if state == "diverged":
        detail = status.get("message", "")
      elif state != "completed":
        log = launch.log_path(self.workdir, job)
        detail = f"exit code {returncode}: {_log_tail(log)} (log: {log})"
      self.out(f"[{self.finished}/{self.total}] {name}: {state} in {seconds:.0f} s "
               f"({self.progress(running)})  {detail}")

  def summary(self, seconds: float, signum: int | None = None) -> str:
    c = self.counts
    stopped = (f"; stopped by {signal.Signals(signum).name}, rerun the same command to resume"
               if signum else "")
    return (f"sweep {self.workdir}: {c['completed']} completed, {c['diverged']} diverged, "
            f"{c['failed']} failed" + (f", {c['preempted']} preempted" if c["preempted"] else "")
            + f" ({len(self.skipped)} skipped as done) in {seconds:.0f} s{stopped}")


def _print_plan(swp: sweep_spec.Sweep, indices: list[int], jobs: list[Job], skipped: list[str],
                fresh: dict[int, str], header: str, out: Callable[[str], None]) -> None:
  """`fresh`: {member index: why its old run would be moved aside}."""
  out(f"{swp.config_arg}: {len(indices)} member(s), {len(skipped)} already done, "
      f"{len(jobs)} job(s) to run ({header})")
  for i in indices:
    note = f"  ({fresh[i]}: its old run would be moved aside)" if i in fresh else ""
    out(f"  {swp.names[i]}  {json.dumps(swp.members[i])}{note}")
  for job in jobs:
    out("  $ " + shlex.join(job.argv))


def run_sweep(config_arg: str, workdir: str, *, parallel: int = 1, dry_run: bool = False,
              only: str | None = None, seeds_mode: str = "auto", backend: str = "local",
              ray_address: str | None = None, overrides: tuple[str, ...] = (),
              rerun_changed: bool = False, rerun_stale: bool = False,
              allow_stale: bool = False, workers: bool = True,
              out: Callable[[str], None] = functools.partial(print, flush=True)
              ) -> dict[str, int]:
  """Checks and runs a sweep; returns the count of members per outcome (OUTCOMES), and as
  `skipped` of those done before (counted in their outcome too); a dry run: {"planned": jobs}.
  `overrides` (`key=value`) apply to every member. Bad input (the sweep file, `only`,
  `parallel`, `overrides`, members whose run on disk has another config unless
  `rerun_changed`, or trained under other code unless `rerun_stale` or `allow_stale`) raises
  ValueError before anything runs or is written; a signal raises
  Interrupted once the running members have exited. With `workers` (backend local) each slot's
  members train in one process that stays up (worker.py), not in a process each."""
  from rnn_research.training import train  # the check builds each member's model and task

  if parallel < 1:
    raise ValueError(f"--parallel must be >= 1, got {parallel}")
  if rerun_stale and allow_stale:
    raise ValueError("give one of --rerun_stale (train stale members afresh) and --allow_stale "
                     "(keep their runs)")
  swp = sweep_spec.with_overrides(sweep_spec.load(config_arg), overrides)
  indices = select(swp, only)
  sweep_spec.check(swp, train.init_state)
  changed = sweep_changes.changed(swp, workdir, indices)
  if changed and not rerun_changed:
    raise sweep_spec.SweepError(sweep_changes.describe(swp, workdir, changed))
  code = provenance.code_fingerprint()
  stale = sweep_changes.stale(swp, workdir, [i for i in indices if i not in changed], code)
  if stale and not (rerun_stale or allow_stale):
    raise sweep_spec.SweepError(sweep_changes.describe_stale(swp, workdir, stale, code))
  fresh = {**{i: "changed" for i in changed},
           **{i: "stale" for i in (stale if rerun_stale else ())}}
  vmap = seeds_mode == "vmap" or (seeds_mode == "auto" and launch.backend_of_children() != "cpu")
  if dry_run:
    jobs, skipped = plan(swp, workdir, indices, vmap, fresh=fresh)
    _print_plan(swp, indices, jobs, skipped, fresh, f"seeds_mode={seeds_mode}, vmap={vmap}",
                out)
    return {"planned": len(jobs)}
  if fresh:
    moved = sweep_changes.move_aside(workdir, [swp.names[i] for i in fresh])
    out(f"moved the old runs of {len(fresh)} changed or stale member(s) to {moved}")
  jobs, skipped = plan(swp, workdir, indices, vmap)
  _write_manifest(swp, workdir, indices)
  out(f"sweep {swp.config_arg} in {workdir}: {len(indices)} member(s), "
      f"{len(indices) - len(skipped)} to run as {len(jobs)} job(s), {len(skipped)} skipped as "
      f"done, parallel {parallel}, backend {backend}"
      + (", in workers" if workers and backend == "local" else "")
      + (f", overrides {' '.join(swp.overrides)}" if swp.overrides else "")
      + (f", {len(stale)} stale member(s) kept (--allow_stale)" if stale and not rerun_stale
         else ""))
  return _run(jobs, workdir, skipped, len(indices), parallel, backend, ray_address, workers,
              out)


def _run(jobs: list[Job], workdir: str, skipped: list[str], total: int, parallel: int,
         backend: str, ray_address: str | None, workers: bool,
         out: Callable[[str], None]) -> dict[str, int]:
  tally, started = _Tally(workdir, skipped, total, len(jobs), parallel, out), time.time()
  if skipped:
    out(f"skipping {len(skipped)} member(s) already done: {', '.join(skipped)}")
  signum = None
  if backend == "ray":
    cores = max(1, len(launch.core_slices(parallel)[0]))
    launch.run_ray(jobs, workdir, ray_address, cores, tally.report)
  else:
    signum = launch.run_local(jobs, workdir, parallel, tally.report, out, workers)
  out(tally.summary(time.time() - started, signum))
  counts = {**tally.counts, "skipped": len(skipped)}
  if signum:
    raise Interrupted(signum, counts)
  return counts


def _write_manifest(swp: sweep_spec.Sweep, workdir: str, indices: list[int]) -> None:
  manifest = {"config": swp.config_arg, "doc": swp.doc, "overrides": list(swp.overrides),
              "members": [{"name": swp.names[i], "overrides": swp.members[i]}
                          for i in range(len(swp.members))],
              "selected": [swp.names[i] for i in indices],
              # for `compare`: get_baseline(), get_metric(), get_group_by() of the sweep file
              "baseline": swp.baseline, "metric": list(swp.metric) if swp.metric else None,
              "group_by": list(swp.group_by) if swp.group_by else None}
  atomic.write_json(os.path.join(workdir, "sweep.json"), manifest)
