"""Where a sweep's jobs run: on local slots pinned to slices of the cores, or as Ray tasks.

A job is one member (or several seeds of one, vmapped). Locally it runs either as a
`python -m rnn_research.main` process of its own (`Processes`) or in its slot's worker, a
process that stays up and trains its slot's members one after another (worker.py); on Ray
as a `main` process. Its output goes to `<workdir>/logs/<first member name>.log`. The jobs of a
sweep share a persistent XLA compilation cache in `<workdir>/.jax_cache` (unless
JAX_COMPILATION_CACHE_DIR is set): members that differ only in their seed compile the same
programs, and all but the first load them. Neither changes a number a run computes (a sweep
rerun both ways reproduced every final metric bit for bit); together they took the skips
sweep from 258 s to 171 s on 2 cores (docs/speed.md). Each launcher calls `report(job,
returncode, seconds, running)` as each job ends (`running`: the jobs still running).

SIGINT, SIGTERM or SIGHUP to a local sweep starts no more jobs and is forwarded to every
running job (SIGHUP as SIGTERM; `main` then saves a checkpoint and exits as `preempted`);
`run_local` waits for them all, so no job outlives the sweep, and returns the signal. Jobs
and workers run in process groups of their own, so a Ctrl-C in the terminal reaches them once,
through the sweep. A third signal kills the jobs that are left (SIGKILL: unsaved steps are lost).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CACHE_DIR = ".jax_cache"  # in a sweep's workdir; compare and the report skip dot-names


@dataclass
class Job:
  """One member, or several seeds of one member trained vmapped: `argv` runs it as a `main`
  process; `request` asks a worker for it (worker.py), where it has one."""
  names: list[str]
  argv: list[str]
  request: dict[str, Any] | None = None


Report = Callable[[Job, int, float, int], None]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
KILL_AFTER = 3  # signals: the third kills the jobs still running


class Stop:
  """Records SIGINT, SIGTERM and SIGHUP while jobs run (in the main thread; elsewhere the
  handlers stay as they are), restoring the previous handlers on exit."""

  def __init__(self):
    self.received: list[int] = []
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "Stop":
    if threading.current_thread() is threading.main_thread():
      for signum in STOP_SIGNALS:
        self._previous[signum] = signal.signal(signum, lambda s, _: self.received.append(s))
    return self

  def __exit__(self, *exc: object) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def forward(self, already: int, procs: list[subprocess.Popen],
              note: Callable[[str], None]) -> int:
    """Sends each signal received since the first `already` to every process in `procs`;
    returns how many have been forwarded."""
    for k, signum in enumerate(self.received[already:], start=already + 1):
      send = signal.SIGKILL if k >= KILL_AFTER else (
          signal.SIGTERM if signum == signal.SIGHUP else signum)
      note(f"{signal.Signals(signum).name}: sent {signal.Signals(send).name} to "
           f"{len(procs)} running job(s); waiting for them to exit"
           + (" (a third signal kills them)" if send != signal.SIGKILL else ""))
      for proc in procs:
        try:
          proc.send_signal(send)
        except ProcessLookupError:
          pass
    return len(self.received)


def log_path(workdir: str, job: Job) -> str:
  """The file that holds `job`'s output."""
  return os.path.join(workdir, "logs", f"{job.names[0]}.log")


def child_env(cores: int, workdir: str | None = None) -> dict[str, str]:
  """The environment of a member process limited to `cores` threads (BLAS and XLA:CPU); with
  `workdir`, compiling through the sweep's cache `<workdir>/.jax_cache` (every program, however
  fast it compiles), unless the caller's environment names a cache already."""
  env = dict(os.environ)
  if workdir is not None and "JAX_COMPILATION_CACHE_DIR" not in env:
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.abspath(workdir), CACHE_DIR)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
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


def spawn(argv: list[str], cores: list[int], workdir: str, **popen: Any) -> subprocess.Popen:
  """`argv` started in a process group of its own with `child_env`, pinned to `cores` at once,
  long before it imports jax and sizes its thread pools (a preexec_fn would fork this
  multithreaded process instead of spawning)."""
  proc = subprocess.Popen(argv, env=child_env(len(cores), workdir), process_group=0, **popen)
  os.sched_setaffinity(proc.pid, cores)
  return proc


class Processes:
  """One process per job (`job.argv`), its output appended to the job's log."""

  def __init__(self, start: Callable[..., subprocess.Popen], workdir: str):
    self.start_process, self.workdir = start, workdir
    self.running: dict[int, tuple[subprocess.Popen, IO[bytes]]] = {}

  def start(self, slot: int, job: Job) -> None:
    log = open(log_path(self.workdir, job), "ab")
    self.running[slot] = (self.start_process(slot, job.argv, stdout=log,
                                             stderr=subprocess.STDOUT), log)

  def busy(self) -> list[subprocess.Popen]:
    return [proc for proc, _ in self.running.values()]

  def ended(self, timeout: float) -> list[tuple[int, int]]:
    """(slot, exit code) of the jobs that ended, after waiting `timeout` s."""
    time.sleep(timeout)
    done = [(slot, proc.returncode) for slot, (proc, _) in self.running.items()
            if proc.poll() is not None]
    for slot, _ in done:
      self.running.pop(slot)[1].close()
    return done

  def close(self) -> None:
    pass  # run_local waits for every job before it closes the pool


def run_local(jobs: list[Job], workdir: str, parallel: int, report: Report,
              note: Callable[[str], None] = print, workers: bool = False) -> int | None:
  """Runs jobs `parallel` at a time, each slot pinned to its cores: each job a process of its
  own, or with `workers` each sent to its slot's worker (worker.py; jobs need a `request`).
  Returns None when every job ran, or the signal that stopped the sweep (see the module)."""
  from rnn_research.experiments import worker  # here: worker.py imports this module

  slots = core_slices(parallel)
  start = lambda slot, argv, **popen: spawn(argv, slots[slot], workdir, **popen)  # noqa: E731
  pool = worker.Workers(start, workdir) if workers else Processes(start, workdir)
  free, running = list(range(parallel)), {}
  pending = list(jobs)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  forwarded = 0
  try:
    with Stop() as stop:
      while (pending and not stop.received) or running:
        while pending and free and not stop.received:
          job, slot = pending.pop(0), free.pop(0)
          pool.start(slot, job)
          running[slot] = (job, time.time())
        for slot, code in pool.ended(0.2):
          job, started = running.pop(slot)
          free.append(slot)
          report(job, code, time.time() - started, len(running))
        forwarded = stop.forward(forwarded, pool.busy(), note)
      return stop.received[0] if stop.received else None
  finally:
    pool.close()


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

  refs = {run.remote(job.argv, os.path.abspath(log_path(workdir, job)), child_env(cores, workdir),
                     os.getcwd()): job for job in jobs}
  while refs:
    ready, _ = ray.wait(list(refs), num_returns=1)
    job = refs.pop(ready[0])
    rc, seconds = ray.get(ready[0])
    report(job, rc, seconds, len(refs))
