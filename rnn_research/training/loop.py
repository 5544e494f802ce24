"""The training loop of one run, or of K runs that differ only in their seed, vmapped.

A group's state is stacked: every leaf has a leading axis K, and run k reads its slice k
(`Run.index`); a run alone has index None and an unstacked state. A non-finite loss or
gradient, or a train or eval loss above `train.max_loss`, stops that run as `diverged` (the
others go on). At its milestones (`cadence`) the loop logs, measures the gradient flow,
evaluates and checkpoints. SIGTERM or SIGINT saves every live run and stops (`preempted`).
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging

from rnn_research.training import data_parallel, diagnostics, optim, prefetch, tbptt
from rnn_research.training.checkpointing import Checkpointer
from rnn_research.training.metric_writer import MetricWriter
from rnn_research.training.status import read_status, write_status

Predict = Callable[..., jax.Array]  # (params, rest, x, mask, resets) -> ys
# Milestone keys of config.train left unset (None) run every ceil(steps / n) steps.
CADENCE = {"eval_every": 6, "checkpoint_every": 6, "diagnostics_every": 6, "log_every": 20}


def cadence(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """The milestone intervals of `config.train`: a key that is set wins; an unset one follows
  `steps` (`CADENCE`). config.json keeps the keys as given; this is the one place they resolve."""
  return {key: -(-cfg.steps // n) if cfg.get(key) is None else cfg.get(key)
          for key, n in CADENCE.items()}


def trouble(values: dict[str, float], loss_key: str, max_loss: float) -> str | None:
  """Why `values` mean divergence (a non-finite value, or `loss_key` above `max_loss`)."""
  bad = [key for key, v in values.items() if not math.isfinite(v)]
  if bad:
    return "non-finite " + ", ".join(bad)
  over = values[loss_key] > max_loss
  return f"{loss_key} {values[loss_key]:.3g} > train.max_loss {max_loss:g}" if over else None


class Pace:
  """Steps/s and ETA from the time spent in train steps only: a process's first step (it
  compiles) and the milestones (eval, checkpoints) are left out, so the ETA holds right after
  a resume. `add` takes explicit durations, so the arithmetic is testable."""

  def __init__(self):
    self.steps, self.seconds, self.lap_steps, self.lap_seconds = 0, 0.0, 0, 0.0

  def add(self, seconds: float, compiled: bool) -> None:
    """Counts one train step that took `seconds` (not if it `compiled`)."""
    if not compiled:
      self.steps, self.seconds = self.steps + 1, self.seconds + seconds
      self.lap_steps, self.lap_seconds = self.lap_steps + 1, self.lap_seconds + seconds

  def lap(self) -> float:
    """Steps/s since the last lap (0.0 without a timed step); starts the next lap."""
    rate = self.lap_steps / self.lap_seconds if self.lap_seconds > 0 else 0.0
    self.lap_steps, self.lap_seconds = 0, 0.0
    return rate

  def eta(self, remaining: int) -> float | None:
    """Seconds for `remaining` steps at this process's mean speed; None before any."""
    return remaining * self.seconds / self.steps if self.seconds > 0 else None


class Run:
  """One run of a group: its config, task, files and progress, and its slice `index` of the
  group's stacked state (None: trained alone, the state unstacked)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, task: Any,
               index: int | None, lead: bool):
    self.config, self.workdir, self.task, self.index = config, workdir, task, index
    self.ckpt = Checkpointer(f"{workdir}/checkpoints", max_to_keep=config.train.max_to_keep)
    self.lead = lead  # this process writes the run's files (process 0 of a multi-host job)
    self.writer = MetricWriter(workdir) if lead else None
    # wall_time adds up over restarts: this process starts where the last one's left off.
    before = float(read_status(workdir).get("wall_time") or 0.0) if lead else 0.0
    self.started_at = time.time() - before
    self.window: list[dict[str, float]] = []
    self.metrics: dict[str, float] = {}
    self.diverged: str | None = None  # the message, once it diverged

  @property
  def who(self) -> str:
    """The prefix of its log lines: the seed, in a group."""
    return "" if self.index is None else f"seed {self.config.train.seed}: "

  def mine(self, tree: Any) -> Any:
    """This run's slice of a (stacked) tree."""
    return tree if self.index is None else jax.tree.map(lambda x: x[self.index], tree)

  def status(self, **fields: Any) -> None:
    if self.lead:
      write_status(self.workdir, wall_time=time.time() - self.started_at, **fields)

  def log(self, done: int, state: dict[str, Any], rate: float, eta: float | None,
          lr: float) -> None:
    """Writes the mean train scalars since the last log, the lr, speed and spectral norms."""
    steps = self.config.train.steps
    scalars = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
    scalars.update({"train/learning_rate": float(lr), "perf/steps_per_sec": rate,
                    **diagnostics.spectral_norms(state["params"])})
    if self.writer:
      self.writer.write_scalars(done, scalars)
    logging.info("%sstep %d/%d  loss %.5g  %.1f steps/s  ETA %s", self.who, done, steps,
                 scalars["train/loss"], rate, "?" if eta is None else f"{eta:.0f} s")
    self.window = []

  def diverge(self, reason: str, done: int) -> None:
    """Marks the run diverged at step `done` for `reason` (its last good checkpoint stays)."""
    last = self.ckpt.latest_step()
    kept = ("no checkpoint was saved before it" if last is None
            else f"the last good checkpoint (step {last}) is kept")
    where = "" if self.index is None else f"{self.workdir} "
    self.diverged = f"{where}diverged at step {done}: {reason}; {kept}"
    self.status(state="diverged", step=done, message=self.diverged)
    if self.index is not None:  # alone, the trainer raises `Diverged` with the message
      logging.error("%s", self.diverged)

  def complete(self, step: int) -> None:
    """Marks the run completed at `step` with its metrics, and says so in one line."""
    self.status(state="completed", step=step, metrics=self.metrics)
    logging.info("%sdone at step %d in %.0f s: %s; %s", self.who, step,
                 time.time() - self.started_at,
                 ", ".join(f"{k}={v:.5g}" for k, v in self.metrics.items()), self.workdir)

  def close(self) -> None:
    self.ckpt.close()
    if self.writer:
      self.writer.close()


@contextlib.contextmanager
def stop_flag() -> Iterator[dict[str, str | None]]:
  """{'signal': 'SIGTERM' or 'SIGINT'} once one arrives (main thread only); a second SIGINT
  raises KeyboardInterrupt (a user who will not wait for the checkpoint)."""
  flag: dict[str, str | None] = {"signal": None}

  def handler(signum: int, _frame: Any) -> None:
    if signum == signal.SIGINT and flag["signal"] == "SIGINT":
      raise KeyboardInterrupt
    flag["signal"] = signal.Signals(signum).name

  try:
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  except ValueError:  # not the main thread
    previous = {}
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def stack(trees: list[Any]) -> Any:
  """Trees stacked on a new leading axis; one tree as it is."""
  return trees[0] if len(trees) == 1 else jax.tree.map(lambda *x: np.stack(x), *trees)


def evaluate(task: Any, predict: Predict, state: dict[str, Any]) -> dict[str, float]:
  """`task.evaluate` of the model in `state`."""
  return task.evaluate(lambda b: np.asarray(
      predict(state["params"], state["rest"], b["x"], b["mask"], b.get("resets"))))


class Loop:
  """Trains `runs` from the (per-run) `states` at one step to `config.train.steps`; fills
  each run's metrics and status. `step_fn` is the pure (state, batch, seed, learning_rate) step."""

  def __init__(self, runs: list[Run], graphdef: Any, step_fn: Callable, predict: Predict,
               states: list[dict[str, Any]]):
    self.runs, self.live, self.predict = runs, list(runs), predict
    self.cfg = cfg = runs[0].config.train
    self.every, self.max_loss = cadence(cfg), float(cfg.get("max_loss", math.inf))
    grouped = runs[0].index is not None
    self.train_step = jax.jit(jax.vmap(step_fn) if grouped else step_fn)
    self.batch_axis = int(grouped)  # of the stacked batches
    seeds = [run.config.train.seed for run in runs]
    self.seeds = np.array(seeds if grouped else seeds[0], np.uint32)
    peaks = [run.config.train.learning_rate for run in runs]  # equal: runs differ in seeds
    self.learning_rate = np.array(peaks if grouped else peaks[0], np.float32)
    task = runs[0].task
    self.flow = diagnostics.gradient_flow_probe(graphdef, states[0], task.loss)
    self.flow_batch = {k: v[:cfg.batch_size] for k, v in task.eval_batches()[0].items()}
    self.lr = optim.schedule(cfg)
    self.mesh = data_parallel.batch_mesh(cfg.batch_size) if cfg.data_parallel else None
    self.params = sum(int(np.size(x)) for x in jax.tree.leaves(states[0]["params"]))
    self.state = stack(states)
    if self.mesh is not None:
      self.state = data_parallel.replicate(self.mesh, self.state)
    self.pace = Pace()

  def run(self, start: int) -> None:
    cfg, every, window, runs = self.cfg, self.every, self.cfg.get("tbptt_window", 0), self.runs
    due = lambda done, key: done % every[key] == 0 or done == cfg.steps  # noqa: E731
    self._announce(start)
    make = lambda step: stack([tbptt.train_batch(r.task, step, window) for r in runs])  # noqa: E731
    batches = prefetch.ahead(make, start, cfg.steps)  # each step's batch, made ahead
    with stop_flag() as stop:
      for step in range(start, cfg.steps):
        done, began = step + 1, time.perf_counter()
        out = self._advance(next(batches))
        self.pace.add(time.perf_counter() - began, compiled=step == start)
        self._check_train(out, done)
        if self.live:
          self._milestones(step, log=due(done, "log_every"), diag=due(done, "diagnostics_every"),
                           evaluate=due(done, "eval_every"), save=due(done, "checkpoint_every"))
        if self.live and stop["signal"]:
          self._preempt(step, stop["signal"])
        if not self.live or stop["signal"]:
          return
    self._finish()

  def _preempt(self, step: int, name: str) -> None:
    """Saves every live run after `step` (a no-op where just saved), marks it preempted."""
    self._milestones(step, log=False, diag=False, evaluate=False, save=True)
    for run in self.live:
      run.status(state="preempted", step=step + 1)
    logging.warning("%s: saved step %d and stopped; rerun to resume", name, step + 1)

  def _announce(self, start: int) -> None:
    """The start line: what trains, from where, on what, into which directories."""
    m, k = self.runs[0].config.model, len(self.runs)
    logging.info("train %s: %s %dx%d (%s params)%s, steps %d->%d, %s x%d, workdir %s",
                 self.runs[0].config.task.name, m.cell, m.hidden_size, m.num_layers,
                 f"{self.params:,}", f", {k} seeds vmapped" if k > 1 else "", start,
                 self.cfg.steps, jax.default_backend(), jax.device_count(),
                 ", ".join(run.workdir for run in self.runs))

  def _advance(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One optimizer step of every run on `batch`; its metrics on the host (one transfer)."""
    if self.mesh is not None:
      batch = data_parallel.shard_batch(self.mesh, batch, axis=self.batch_axis)
    self.state, out = self.train_step(self.state, batch, self.seeds, self.learning_rate)
    return jax.device_get(out)

  def _check_train(self, out: dict[str, np.ndarray], done: int) -> None:
    """Adds each live run's metrics to its window, or stops it as diverged."""
    for run in list(self.live):
      values = {key: float(v) for key, v in run.mine(out).items()}
      reason = trouble(values, "train/loss", self.max_loss)
      if reason is None:
        run.window.append(values)
      else:
        run.diverge(reason, done)
        self.live.remove(run)

  def _milestones(self, step: int, log: bool, diag: bool, evaluate: bool, save: bool) -> None:
    """What is due after `step`: train scalars, gradient flow, evaluation, checkpoint."""
    if not (log or diag or evaluate or save):
      return
    done, host = step + 1, jax.device_get(self.state)
    rate, eta = (self.pace.lap(), self.pace.eta(self.cfg.steps - done)) if log else (0.0, None)
    for run in list(self.live):
      mine = run.mine(host)
      if log:
        run.log(done, mine, rate, eta, self.lr(step))
      if diag and run.writer and self.flow is not None:
        self._gradient_flow(run, done, mine)
      if evaluate and not self._evaluate(run, done, mine):
        continue  # diverged: no checkpoint of this state
      if save:
        run.ckpt.save(done, mine)
        run.status(step=done)

  def _gradient_flow(self, run: Run, done: int, state: dict[str, Any]) -> None:
    norms = np.asarray(self.flow(state["params"], state["rest"], self.flow_batch))  # [L, T]
    run.writer.write_images(done, {"grad_flow/norm_dL_dh": norms}, log=True)
    run.writer.write_scalars(done, {f"grad_flow/ratio_first_last/layer_{l}":
                                    float(row[0] / max(row[-1], 1e-30))
                                    for l, row in enumerate(norms)})

  def _evaluate(self, run: Run, done: int, state: dict[str, Any]) -> bool:
    """Evaluates `run` at step `done`; False (and the run diverged) if its eval loss is bad."""
    run.metrics = evaluate(run.task, self.predict, state)
    if run.writer:
      run.writer.write_scalars(done, {f"eval/{k}": v for k, v in run.metrics.items()})
    logging.info("%seval at step %d: %s", run.who, done,
                 ", ".join(f"{k}={v:.5g}" for k, v in run.metrics.items()))
    reason = trouble({"eval/loss": run.metrics["loss"]}, "eval/loss", self.max_loss)
    if reason is not None:
      run.diverge(reason, done)
      self.live.remove(run)
    return reason is None

  def _finish(self) -> None:
    """Marks the live runs completed (evaluated first if they resumed at the end)."""
    host = jax.device_get(self.state)
    for run in self.live:
      mine = run.mine(host)
      if not run.metrics:  # resumed at the end: evaluate what the checkpoint holds
        run.metrics = evaluate(run.task, self.predict, mine)
      run.complete(int(mine["step"]))
