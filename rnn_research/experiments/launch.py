"""Where a sweep's jobs run: local subprocesses pinned to slices of the cores, or Ray tasks.

A job is one `python -m rnn_research.main` process; its output goes to
`<workdir>/logs/<first member name>.log`. Each launcher calls `report(job, returncode,
seconds)` as each job ends.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Job:
  """One `main` process: a member, or several seeds of one member trained vmapped."""
  names: list[str]
  argv: list[str]


Report = Callable[[Job, int, float], None]


def log_path(workdir: str, job: Job) -> str:
  """The file that holds `job`'s output."""
  return os.path.join(workdir, "logs", f"{job.names[0]}.log")


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


def backend_of_children() -> str:
  """jax.default_backend() as a member process will see it (asked in a child process, so
  this one never claims an accelerator)."""
  out = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                       capture_output=True, text=True, env=child_env(1), check=False)
  return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout else "cpu"


def run_local(jobs: list[Job], workdir: str, parallel: int, report: Report) -> None:
  """Runs jobs as subprocesses, `parallel` at a time, each pinned to its slot's cores."""
  slots = core_slices(parallel)
  free, running = list(range(parallel)), {}
  pending = list(jobs)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  while pending or running:
    while pending and free:
      job, slot = pending.pop(0), free.pop(0)
      log = open(log_path(workdir, job), "ab")
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
            report: Report) -> None:
  """Submits each job as a Ray task (`cores` CPUs each); workdir must be on a shared disk."""
  try:
    import ray  # optional: the `ray` extra
  except ImportError:
    raise ValueError('--backend=ray needs ray: python3 -m pip install -e ".[ray]"') from None
  ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)

  @ray.remote(num_cpus=cores)
  def run(argv: list[str], log_file: str, env: dict[str, str], cwd: str) -> tuple[int, float]:
    started = time.time()
    with open(log_file, "ab") as log:
      rc = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return rc, time.time() - started

  refs = {run.remote(job.argv, os.path.abspath(log_path(workdir, job)), child_env(cores),
                     os.getcwd()): job for job in jobs}
  while refs:
    ready, _ = ray.wait(list(refs), num_returns=1)
    job = refs.pop(ready[0])
    rc, seconds = ray.get(ready[0])
    report(job, rc, seconds)
