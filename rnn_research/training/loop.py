"""The training loop of one run, or of K runs that differ only in their seed, vmapped.

A group's state is stacked: every leaf has a leading axis K, and run k reads its slice k
(`Run.index`); a run trained alone has index None and an unstacked state. Each step trains
one chunk, checks the K losses and gradient norms for non-finite values (that run stops as
`diverged`, the others go on), and at its milestones logs train scalars, measures the gradient
flow, evaluates and checkpoints. SIGTERM saves every live run and stops (`preempted`).
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

from rnn_research.training import data_parallel, diagnostics, optim
from rnn_research.training.checkpointing import Checkpointer
from rnn_research.training.metric_writer import MetricWriter
from rnn_research.training.status import write_status

Predict = Callable[..., jax.Array]  # (params, rest, x, mask, resets) -> ys


class Run:
  """One run of a group: its config, task, files and progress, and its slice `index` of the
  group's stacked state (None: trained alone, the state unstacked)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, task: Any,
               index: int | None, lead: bool):
    self.config, self.workdir, self.task, self.index = config, workdir, task, index
    self.ckpt = Checkpointer(f"{workdir}/checkpoints", max_to_keep=config.train.max_to_keep)
    self.lead = lead  # this process writes the run's files (process 0 of a multi-host job)
    self.writer = MetricWriter(workdir) if lead else None
    self.started_at = time.time()
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

  def log(self, done: int, state: dict[str, Any], rate: float, lr: float) -> None:
    """Writes the mean train scalars since the last log, and the learning rate, speed and
    spectral norms at step `done`."""
    steps = self.config.train.steps
    scalars = {k: float(np.mean([w[k] for w in self.window])) for k in self.window[0]}
    scalars.update({"train/learning_rate": float(lr), "perf/steps_per_sec": rate,
                    **diagnostics.spectral_norms(state["params"])})
    if self.writer:
      self.writer.write_scalars(done, scalars)
    logging.info("%sstep %d/%d  loss %.5g  %.1f steps/s  ETA %.0f s", self.who, done, steps,
                 scalars["train/loss"], rate, (steps - done) / rate if rate else 0.0)
    self.window = []

  def diverge(self, values: dict[str, float], done: int) -> None:
    """Marks the run diverged at step `done` (its last good checkpoint stays intact)."""
    bad = ", ".join(k for k, v in values.items() if not math.isfinite(v))
    last = self.ckpt.latest_step()
    kept = ("no checkpoint was saved before it" if last is None
            else f"the last good checkpoint (step {last}) is kept")
    where = "" if self.index is None else f"{self.workdir} "
    self.diverged = f"{where}diverged at step {done}: non-finite {bad}; {kept}"
    self.status(state="diverged", step=done, message=self.diverged)
    if self.index is not None:  # alone, the trainer raises `Diverged` with the message
      logging.error("%s", self.diverged)

  def close(self) -> None:
    self.ckpt.close()
    if self.writer:
      self.writer.close()


@contextlib.contextmanager
def sigterm_flag() -> Iterator[dict[str, bool]]:
  """{'stop': True} once SIGTERM arrives (main thread only)."""
  flag = {"stop": False}
  try:
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.update(stop=True))
  except ValueError:  # not the main thread
    yield flag
    return
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


def stack(trees: list[Any]) -> Any:
  """Trees stacked on a new leading axis; one tree as it is."""
  return trees[0] if len(trees) == 1 else jax.tree.map(lambda *x: np.stack(x), *trees)


def evaluate(task: Any, predict: Predict, state: dict[str, Any]) -> dict[str, float]:
  """`task.evaluate` of the model in `state`."""
  return task.evaluate(lambda b: np.asarray(
      predict(state["params"], state["rest"], b["x"], b["mask"], b.get("resets"))))


class Loop:
  """Trains `runs` from the (per-run) `states` at one step to `config.train.steps`; fills
  each run's metrics and status. `step_fn` is the pure (state, batch, seed) step."""

  def __init__(self, runs: list[Run], graphdef: Any, step_fn: Callable, predict: Predict,
               states: list[dict[str, Any]]):
    self.runs, self.live, self.predict = runs, list(runs), predict
    self.cfg = cfg = runs[0].config.train
    grouped = runs[0].index is not None
    self.train_step = jax.jit(jax.vmap(step_fn) if grouped else step_fn)
    self.batch_axis = int(grouped)  # of the stacked batches
    seeds = [run.config.train.seed for run in runs]
    self.seeds = np.array(seeds if grouped else seeds[0], np.uint32)
    task = runs[0].task
    self.flow = diagnostics.gradient_flow_probe(graphdef, states[0], task.loss)
    self.flow_batch = {k: v[:cfg.batch_size] for k, v in task.eval_batches()[0].items()}
    self.lr = optim.schedule(cfg)
    self.mesh = data_parallel.batch_mesh(cfg.batch_size) if cfg.data_parallel else None
    self.state = stack(states)
    if self.mesh is not None:
      self.state = data_parallel.replicate(self.mesh, self.state)
    self.tick, self.timed = time.time(), 0  # steps/s leaves out the first step, which compiles

  def run(self, start: int) -> None:
    cfg = self.cfg
    with sigterm_flag() as sigterm:
      for step in range(start, cfg.steps):
        done = step + 1
        self._check_finite(self._advance(step), done)
        if step == start and done % cfg.log_every:
          self.tick, self.timed = time.time(), 0
        if not self.live:
          return
        self._milestones(step, log=self._due(done, cfg.log_every),
                         diag=self._due(done, cfg.diagnostics_every),
                         evaluate=self._due(done, cfg.eval_every),
                         save=self._due(done, cfg.checkpoint_every) or sigterm["stop"])
        if sigterm["stop"]:
          for run in self.live:
            run.status(state="preempted", step=done)
          logging.warning("SIGTERM: saved step %d and stopped; rerun to resume", done)
          return
    self._finish()

  def _due(self, done: int, every: int) -> bool:
    return done % every == 0 or done == self.cfg.steps

  def _advance(self, step: int) -> dict[str, np.ndarray]:
    """One optimizer step of every run; its metrics on the host (one transfer)."""
    batch = stack([run.task.train_batch(step) for run in self.runs])
    if self.mesh is not None:
      batch = data_parallel.shard_batch(self.mesh, batch, axis=self.batch_axis)
    self.state, out = self.train_step(self.state, batch, self.seeds)
    self.timed += 1
    return jax.device_get(out)

  def _check_finite(self, out: dict[str, np.ndarray], done: int) -> None:
    """Adds each live run's metrics to its window, or stops it as diverged."""
    for run in list(self.live):
      values = {key: float(v) for key, v in run.mine(out).items()}
      if all(math.isfinite(v) for v in values.values()):
        run.window.append(values)
      else:
        run.diverge(values, done)
        self.live.remove(run)

  def _milestones(self, step: int, log: bool, diag: bool, evaluate: bool, save: bool) -> None:
    """What is due after `step`: train scalars, gradient flow, evaluation, checkpoint."""
    if not (log or diag or evaluate or save):
      return
    done, host = step + 1, jax.device_get(self.state)
    rate = self.timed / max(time.time() - self.tick, 1e-9)
    for run in self.live:
      mine = run.mine(host)
      if log:
        run.log(done, mine, rate, self.lr(step))
      if diag and run.writer and self.flow is not None:
        self._gradient_flow(run, done, mine)
      if evaluate:
        self._evaluate(run, done, mine)
      if save:
        run.ckpt.save(done, mine)
        run.status(step=done)
    if log:
      self.tick, self.timed = time.time(), 0

  def _gradient_flow(self, run: Run, done: int, state: dict[str, Any]) -> None:
    norms = np.asarray(self.flow(state["params"], state["rest"], self.flow_batch))  # [L, T]
    run.writer.write_images(done, {"grad_flow/norm_dL_dh": norms}, log=True)
    run.writer.write_scalars(done, {f"grad_flow/ratio_first_last/layer_{l}":
                                    float(row[0] / max(row[-1], 1e-30))
                                    for l, row in enumerate(norms)})

  def _evaluate(self, run: Run, done: int, state: dict[str, Any]) -> None:
    run.metrics = evaluate(run.task, self.predict, state)
    if run.writer:
      run.writer.write_scalars(done, {f"eval/{k}": v for k, v in run.metrics.items()})
    logging.info("%seval at step %d: %s", run.who, done,
                 ", ".join(f"{k}={v:.5g}" for k, v in run.metrics.items()))

  def _finish(self) -> None:
    """Marks the live runs completed (evaluated first if they resumed at the end)."""
    host = jax.device_get(self.state)
    for run in self.live:
      mine = run.mine(host)
      if not run.metrics:  # resumed at the end: evaluate what the checkpoint holds
        run.metrics = evaluate(run.task, self.predict, mine)
      run.status(state="completed", step=int(mine["step"]), metrics=run.metrics)
