"""Where a sweep's jobs run: local subprocesses pinned to slices of the cores, or Ray tasks.

A job is one `python -m rnn_research.main` process; its output goes to
`<workdir>/logs/<first member name>.log`. Each launcher calls `report(job, returncode,
seconds, running)` as each job ends (`running`: the jobs still running).

SIGINT, SIGTERM or SIGHUP to a local sweep starts no more jobs and is forwarded to every
running job (SIGHUP as SIGTERM; `main` then saves a checkpoint and exits as `preempted`);
`run_local` waits for them all, so no job outlives the sweep, and returns the signal. Jobs run
in process groups of their own, so a Ctrl-C in the terminal reaches them once, through the
sweep. A third signal kills the jobs that are left (SIGKILL: unsaved steps are lost).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Job:
  """One `main` process: a member, or several seeds of one member trained vmapped."""
  names: list[str]
  argv: list[str]


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


def run_local(jobs: list[Job], workdir: str, parallel: int, report: Report,
              note: Callable[[str], None] = print) -> int | None:
  """Runs jobs as subprocesses, `parallel` at a time, each pinned to its slot's cores.
  Returns None when every job ran, or the signal that stopped the sweep (see the module)."""
  slots = core_slices(parallel)
  free, running = list(range(parallel)), {}
  pending = list(jobs)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  forwarded = 0
  with Stop() as stop:
    while (pending and not stop.received) or running:
      while pending and free and not stop.received:
        job, slot = pending.pop(0), free.pop(0)
        log = open(log_path(workdir, job), "ab")
        proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT,
                                env=child_env(len(slots[slot])), process_group=0)
        # Pinned at once, long before the child imports jax and sizes its thread pools (a
        # preexec_fn would fork this multithreaded process instead of spawning).
        os.sched_setaffinity(proc.pid, slots[slot])
        running[proc] = (job, slot, log, time.time())
      time.sleep(0.2)
      forwarded = stop.forward(forwarded, list(running), note)
      for proc in [p for p in running if p.poll() is not None]:
        job, slot, log, started = running.pop(proc)
        log.close()
        free.append(slot)
        report(job, proc.returncode, time.time() - started, len(running))
    return stop.received[0] if stop.received else None


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
    report(job, rc, seconds, len(refs))
