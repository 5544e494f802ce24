"""A member trainer that stays up: it trains the sweep members sent to it, one after another.

A local sweep keeps one worker per slot, pinned to the slot's cores (launch.Workers), so that
a member does not pay what a process of its own pays before its first step: starting Python
and importing jax, flax and orbax, about 3 s of a 10-30 s member on 2 cores. A member trains
exactly as `python -m rnn_research.main` trains it: the config that `sweep_spec` builds from
the sweep file (the one the sweep checks and compares with each run's config.json),
`member.train_runs`, the same files and exit code. While it trains, the process's stdout and
stderr (file descriptors 1 and 2) are its log.

Protocol, one JSON object per line. In: {"sweep": "file.py[:arg]", "overrides": [
"key=value", ...], "indices": [member, ...], "workdirs": [dir, ...], "log": path}; several
indices are seeds trained vmapped, as `main --seeds`. Out: {"returncode": main's exit code}
once the member has ended. The end of the input ends the worker.

  python -m rnn_research.experiments.worker   # launched by launch.Workers, not by people
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import traceback
from typing import IO, Any, Callable, Iterator

from absl import app, logging

from rnn_research.experiments import sweep_spec
from rnn_research.experiments.member import train_runs
from rnn_research.experiments.launch import Job, log_path

ARGV = [sys.executable, "-m", "rnn_research.experiments.worker"]


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
  """File descriptors 1 and 2 append to `path` inside the block (subprocesses and C code
  included), and are restored after it."""
  sys.stdout.flush()
  sys.stderr.flush()
  with open(path, "ab") as log:
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
  try:
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, old in zip((1, 2), saved):
      os.dup2(old, fd)
      os.close(old)


def train_member(request: dict[str, Any], sweeps: dict[Any, sweep_spec.Sweep]) -> int:
  """Trains the members of one request; main's exit code (1 for an unexpected exception,
  whose traceback goes to the log). `sweeps` caches the loaded sweep files."""
  key = (request["sweep"], tuple(request["overrides"]))
  try:
    if key not in sweeps:
      sweeps[key] = sweep_spec.with_overrides(sweep_spec.load(key[0]), key[1])
    configs = [sweeps[key].config(i) for i in request["indices"]]
  except ValueError as err:
    logging.error("bad input: %s", err)
    return 2
  try:
    return train_runs(configs, list(request["workdirs"]))
  except Exception:  # noqa: BLE001 - reported like a crashed `main`; the next member goes on
    traceback.print_exc()
    return 1


def serve(requests: IO[str], answers: IO[str]) -> None:
  """Answers each request line with the exit code of its members, until `requests` ends."""
  sweeps: dict[Any, sweep_spec.Sweep] = {}
  for line in requests:
    request = json.loads(line)
    with output_to(request["log"]):
      code = train_member(request, sweeps)
    answers.write(json.dumps({"returncode": code}) + "\n")
    answers.flush()


class Workers:
  """The launcher's side: one worker per slot, started when its slot gets its first job (and
  again after a crash); `launch.run_local(..., workers=True)` drives it as it drives
  launch.Processes."""

  def __init__(self, start: Callable[..., subprocess.Popen], workdir: str):
    self.start_process, self.workdir = start, workdir
    self.procs: dict[int, subprocess.Popen] = {}  # slot -> its worker
    self.running: dict[int, subprocess.Popen] = {}  # slot -> its worker, while it has a job

  def start(self, slot: int, job: Job) -> None:
    if job.request is None:
      raise ValueError(f"job {job.names} has no worker request")
    line = json.dumps({**job.request, "log": os.path.abspath(log_path(self.workdir, job))})
    for attempt in range(2):  # a worker that died since its last job is started again
      proc = self.procs.get(slot)
      if proc is None or proc.poll() is not None:
        proc = self.procs[slot] = self.start_process(slot, ARGV, stdin=subprocess.PIPE,
                                                     stdout=subprocess.PIPE, text=True)
      try:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        break
      except BrokenPipeError:
        proc.wait()
        if attempt:
          raise
    self.running[slot] = proc

  def busy(self) -> list[subprocess.Popen]:
    return list(self.running.values())

  def ended(self, timeout: float) -> list[tuple[int, int]]:
    """(slot, exit code) of the jobs that ended within `timeout` s; a worker that died
    mid-job gives its own exit code (negative: the signal that killed it)."""
    slots = {proc.stdout: slot for slot, proc in self.running.items()}
    ready, _, _ = select.select(list(slots), [], [], timeout)
    done = []
    for out in ready:
      slot = slots[out]
      proc = self.running.pop(slot)
      answer = out.readline()
      done.append((slot, json.loads(answer)["returncode"] if answer else proc.wait()))
    return done

  def close(self) -> None:
    """Ends every worker: the end of its input, then SIGKILL after 60 s."""
    for proc in self.procs.values():
      try:
        proc.stdin.close()
      except BrokenPipeError:
        pass
    for proc in self.procs.values():
      try:
        proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str]) -> None:
  del argv
  answers = os.fdopen(os.dup(1), "w")  # the answers' own copy of stdout
  os.dup2(2, 1)  # a stray print between members goes to stderr, not into the answers
  serve(sys.stdin, answers)


if __name__ == "__main__":
  app.run(main)
