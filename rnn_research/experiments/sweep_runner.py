"""Run every member of an ablation sweep, resumably, in parallel processes or on a Ray cluster.

  python -m rnn_research.sweep --config=configs/ablations/norm_placement.py --workdir=runs/norm \
      [--parallel=2] [--dry_run] [--only=REGEX] [--seeds_mode=auto|vmap|processes] \
      [--backend=local|ray --ray_address=ADDR]

Each member is `python -m rnn_research.main --config=<sweep file> --config.<key>=<value> ...
--workdir=DIR/<member name>`: the same files and status.json as a run of its own (`--dry_run`
prints these commands). Members that differ only in `train.seed` may run as one vmapped
program (`main --seeds=...`); `auto` does so on accelerators and not on CPU, where it was
measured slower. Rerunning skips completed and diverged members and resumes the others from
their checkpoints; a member that diverges or fails is recorded and the sweep goes on. Every
member is checked before anything runs. Exit code: 0 when no member failed, 1 otherwise, 2 bad
input. `DIR/sweep.json` lists the members; `DIR/logs/` holds each job's output.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from absl import app, flags

from rnn_research.experiments import sweep_spec
from rnn_research.cli import parse_flags
from rnn_research.training.status import read_status

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Sweep file, configs/ablations/<x>.py[:arg].")
flags.DEFINE_string("workdir", None, "Directory of the sweep: one subdirectory per member.")
flags.DEFINE_integer("parallel", 1, "Members run at once, each pinned to its share of the cores.")
flags.DEFINE_bool("dry_run", False, "List members and their commands; train nothing.")
flags.DEFINE_string("only", None, "Run only members whose name matches this regex.")
flags.DEFINE_enum("seeds_mode", "auto", ["auto", "vmap", "processes"],
                  "Train members that differ only in train.seed as one vmapped program "
                  "(vmap), as separate processes, or per backend (auto: vmap off CPU).")
flags.DEFINE_enum("backend", "local", ["local", "ray"], "Where members run.")
flags.DEFINE_string("ray_address", None, "Ray cluster address for --backend=ray ('auto', "
                    "'ray://host:10001'); none starts a local Ray instance.")
flags.mark_flags_as_required(["config", "workdir"])

DONE_STATES = ("completed", "diverged")  # reruns skip these: the outcome is known
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Job:
  """One `main` process: a member, or several seeds of one member trained vmapped."""
  names: list[str]
  argv: list[str]


def member_argv(swp: sweep_spec.Sweep, overrides: dict[str, Any], workdir: str) -> list[str]:
  """The `python -m rnn_research.main` command line of one member (ml_collections parses each
  override by the type of its config field)."""
  return ([sys.executable, "-m", "rnn_research.main", f"--config={swp.config_arg}"]
          + [f"--config.{k}={v}" for k, v in overrides.items()]
          + [f"--workdir={workdir}"])


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


def plan(swp: sweep_spec.Sweep, workdir: str, indices: list[int], vmap_seeds: bool
         ) -> tuple[list[Job], list[str]]:
  """(jobs to run, names skipped because their outcome is on disk)."""
  todo, skipped = [], []
  for i in indices:
    status = read_status(os.path.join(workdir, swp.names[i]))
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
             _checkpoint_step(os.path.join(workdir, swp.names[i])))
    groups.setdefault(key, []).append(i)
  jobs = []
  for members in groups.values():
    first = members[0]
    if len(members) == 1:
      jobs.append(Job([swp.names[first]], member_argv(swp, swp.members[first],
                                                      os.path.join(workdir, swp.names[first]))))
      continue
    rest = {k: v for k, v in swp.members[first].items() if k != "train.seed"}
    seeds = ",".join(str(swp.members[i]["train.seed"]) for i in members)
    argv = member_argv(swp, rest, os.path.join(workdir, _seed_template(swp, first)))
    jobs.append(Job([swp.names[i] for i in members], argv + [f"--seeds={seeds}"]))
  return jobs, skipped


def child_env(cores: int) -> dict[str, str]:
  """The environment of a member process limited to `cores` threads (BLAS and XLA:CPU)."""
  env = dict(os.environ)
  for var in THREAD_VARS:
    env[var] = str(cores)
  if cores == 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo
  env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), root, env.get("PYTHONPATH"))
                                      if p)
  return env


def core_slices(parallel: int) -> list[list[int]]:
  """The cores of each of `parallel` slots: an even split of this process's cores."""
  cpus = sorted(os.sched_getaffinity(0))
  share = max(1, len(cpus) // parallel)
  return [[cpus[(slot * share + j) % len(cpus)] for j in range(share)]
          for slot in range(parallel)]


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


def run_local(jobs: list[Job], workdir: str, parallel: int,
              report: Callable[[Job, int, float], None]) -> None:
  """Runs jobs as subprocesses, `parallel` at a time, each pinned to its slot's cores."""
  slots = core_slices(parallel)
  free, running = list(range(parallel)), {}
  pending = list(jobs)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  while pending or running:
    while pending and free:
      job, slot = pending.pop(0), free.pop(0)
      log = open(os.path.join(workdir, "logs", f"{job.names[0]}.log"), "ab")
      proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT,
                              env=child_env(len(slots[slot])))
      # Pinned at once, long before the child imports jax and sizes its thread pools (a
      # preexec_fn would fork this multithreaded process instead of spawning).
      os.sched_setaffinity(proc.pid, slots[slot])
      running[proc] = (job, slot, log, time.time())
    time.sleep(0.2)
    for proc in [p for p in running if p.poll() is not None]:
      job, slot, log, started = running.pop(proc)
      log.close()
      free.append(slot)
      report(job, proc.returncode, time.time() - started)


def run_ray(jobs: list[Job], workdir: str, address: str | None, cores: int,
            report: Callable[[Job, int, float], None]) -> None:
  """Submits each job as a Ray task (`cores` CPUs each); workdir must be on a shared disk."""
  try:
    import ray  # optional: the `ray` extra
  except ImportError:
    raise ValueError('--backend=ray needs ray: python3 -m pip install -e ".[ray]"') from None
  ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)

  @ray.remote(num_cpus=cores)
  def run(argv: list[str], log_path: str, env: dict[str, str], cwd: str) -> tuple[int, float]:
    started = time.time()
    with open(log_path, "ab") as log:
      rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return rc, time.time() - started

  refs = {run.remote(job.argv, os.path.abspath(os.path.join(workdir, "logs",
                                                            f"{job.names[0]}.log")),
                     child_env(cores), os.getcwd()): job for job in jobs}
  while refs:
    ready, _ = ray.wait(list(refs), num_returns=1)
    job = refs.pop(ready[0])
    rc, seconds = ray.get(ready[0])
    report(job, rc, seconds)


def backend_of_children() -> str:
  """jax.default_backend() as a member process will see it (asked in a child process, so
  this one never claims an accelerator)."""
  out = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                       capture_output=True, text=True, env=child_env(1), check=False)
  return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout else "cpu"


def run_sweep(config_arg: str, workdir: str, *, parallel: int = 1, dry_run: bool = False,
              only: str | None = None, seeds_mode: str = "auto", backend: str = "local",
              ray_address: str | None = None,
              out: Callable[[str], None] = functools.partial(print, flush=True)
              ) -> dict[str, int]:
  """Checks and runs a sweep; returns the count of members per outcome, and of those skipped
  because they were done before (counted in their outcome too)."""
  from rnn_research.training import train  # the check builds each member's model and task

  if parallel < 1:
    raise ValueError(f"--parallel must be >= 1, got {parallel}")
  swp = sweep_spec.load(config_arg)
  indices = list(range(len(swp.members)))
  if only:
    try:
      pattern = re.compile(only)
    except re.error as err:
      raise ValueError(f"--only={only!r} is not a regular expression: {err}") from None
    indices = [i for i in indices if pattern.search(swp.names[i])]
    if not indices:
      raise ValueError(f"--only={only!r} matches no member; members: {', '.join(swp.names)}")
  sweep_spec.check(swp, train.init_state)
  vmap = seeds_mode == "vmap" or (seeds_mode == "auto" and backend_of_children() != "cpu")
  jobs, skipped = plan(swp, workdir, indices, vmap)
  if dry_run:
    out(f"{config_arg}: {len(indices)} member(s), {len(skipped)} already done, "
        f"{len(jobs)} job(s) to run (seeds_mode={seeds_mode}, vmap={vmap})")
    for i in indices:
      out(f"  {swp.names[i]}  {json.dumps(swp.members[i])}")
    for job in jobs:
      out("  $ " + " ".join(job.argv))
    return {"planned": len(jobs)}
  _write_manifest(swp, workdir, indices)
  counts = {"completed": 0, "diverged": 0, "failed": 0, "preempted": 0}
  for name in skipped:
    counts[read_status(os.path.join(workdir, name))["state"]] += 1
  total, started = len(indices), time.time()
  finished = [len(skipped)]
  if skipped:
    out(f"skipping {len(skipped)} member(s) already done: {', '.join(skipped)}")

  def report(job: Job, returncode: int, seconds: float) -> None:
    for name in job.names:
      state, status = outcome(workdir, name, returncode)
      counts[state] += 1
      finished[0] += 1
      detail = ", ".join(f"{k}={v:.4g}" for k, v in (status.get("metrics") or {}).items())
      if state == "diverged":
        detail = status.get("message", "")
      elif state != "completed":
        log = os.path.join(workdir, "logs", f"{job.names[0]}.log")
        detail = f"exit code {returncode}: {_log_tail(log)} (log: {log})"
      out(f"[{finished[0]}/{total}] {name}: {state} in {seconds:.0f} s  {detail}")

  if backend == "ray":
    run_ray(jobs, workdir, ray_address, max(1, len(core_slices(parallel)[0])), report)
  else:
    run_local(jobs, workdir, parallel, report)
  out(f"sweep {workdir}: {counts['completed']} completed, {counts['diverged']} diverged, "
      f"{counts['failed']} failed"
      + (f", {counts['preempted']} preempted" if counts["preempted"] else "")
      + f" ({len(skipped)} skipped as done) in {time.time() - started:.0f} s")
  counts["skipped"] = len(skipped)
  return counts


def _write_manifest(swp: sweep_spec.Sweep, workdir: str, indices: list[int]) -> None:
  os.makedirs(workdir, exist_ok=True)
  manifest = {"config": swp.config_arg, "doc": swp.doc,
              "members": [{"name": swp.names[i], "overrides": swp.members[i]}
                          for i in range(len(swp.members))],
              "selected": [swp.names[i] for i in indices]}
  tmp = os.path.join(workdir, "sweep.json.tmp")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp, os.path.join(workdir, "sweep.json"))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # the check runs on the CPU, leaving accelerators to the members
  jax.config.update("jax_platforms", "cpu")
  try:
    counts = run_sweep(FLAGS.config, FLAGS.workdir, parallel=FLAGS.parallel,
                       dry_run=FLAGS.dry_run, only=FLAGS.only, seeds_mode=FLAGS.seeds_mode,
                       backend=FLAGS.backend, ray_address=FLAGS.ray_address)
  except ValueError as err:  # SweepError included
    print(f"bad input: {err}", file=sys.stderr)
    sys.exit(2)
  sys.exit(1 if counts.get("failed") else 0)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
