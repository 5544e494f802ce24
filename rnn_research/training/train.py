"""`train_and_evaluate(config, workdir)`: train one model of `config.model` on `config.task`.

Writes into `workdir`: `config.json` (resolved config), TensorBoard event files, orbax
checkpoints in `checkpoints/` (params, optimizer state, step; the data of step k is a pure
function of (seed, k), so the step is the data position) and `status.json`
(`state`: running | completed | diverged | failed | preempted, last step, final metrics, wall
time). Rerunning the same command resumes from the latest checkpoint; SIGTERM saves and exits.
The first non-finite loss or gradient stops the run at that step (`Diverged`; the last good
checkpoint stays intact).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from rnn_research.training import data_parallel, diagnostics, optim, workdir as run_dir
from rnn_research.training.checkpointing import Checkpointer
from rnn_research.training.metric_writer import MetricWriter
from rnn_research.core.models import build
from rnn_research.training.status import write_status
from rnn_research.tasks import TASKS

_POSITIVE = ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every",
             "diagnostics_every")


class Diverged(RuntimeError):
  """A non-finite loss or gradient; the run stopped at that step."""


def _check_train(cfg: Any) -> None:
  for key in _POSITIVE:
    if not isinstance(cfg[key], int) or cfg[key] < 1:
      raise ValueError(f"config.train.{key} must be a positive integer, got {cfg[key]!r}")
  if not isinstance(cfg.data_parallel, bool):
    raise ValueError(f"config.train.data_parallel must be True or False, got {cfg.data_parallel!r}")
  if not cfg.learning_rate > 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {cfg.learning_rate!r}")


def train_step_fn(graphdef: Any, task: Any, tx: optax.GradientTransformation):
  """The pure step (state, batch, seed) -> (state, metrics); jit it, or vmap it over seeds.

  Dropout draws from fold_in(PRNGKey(seed), step): like the data, a pure function of (seed,
  step), so a resumed run repeats exactly the masks an uninterrupted one would draw.
  """

  def train_step(state: dict[str, Any], batch: dict[str, jax.Array], seed: jax.Array):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), state["step"])

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state["rest"])
      ys = model(batch["x"], batch["mask"], resets=batch.get("resets"), key=key)
      loss = task.loss(ys, batch)
      return loss, nnx.split(model, nnx.Param, ...)[2].to_pure_dict()

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"params": optax.apply_updates(state["params"], updates), "rest": rest,
           "opt_state": opt_state, "step": state["step"] + 1}
    metrics = {"train/loss": loss, "grad/global_norm": diagnostics.tree_norm(grads),
               **diagnostics.layer_grad_norms(grads)}
    return new, metrics

  return train_step


def make_train_step(graphdef: Any, task: Any, tx: optax.GradientTransformation):
  """The jitted pure step: (state, batch, seed) -> (state, metrics)."""
  return jax.jit(train_step_fn(graphdef, task, tx))


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[dict[str, bool]]:
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


def make_predict(graphdef: Any, state: dict[str, Any]):
  """The jitted eval-mode call (params, rest, x, mask, resets) -> ys; compiled once per run."""
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  eval_graph = nnx.split(model, nnx.Param, ...)[0]
  return jax.jit(lambda p, r, x, m, rs: nnx.merge(eval_graph, p, r)(x, m, resets=rs))


def _evaluate(task: Any, predict: Any, state: dict[str, Any]) -> dict[str, float]:
  return task.evaluate(lambda b: np.asarray(
      predict(state["params"], state["rest"], b["x"], b["mask"], b.get("resets"))))


def init_state(config: ml_collections.ConfigDict):
  """Validate `config` and build (task, graphdef, state, tx); writes nothing anywhere."""
  cfg = config.train
  _check_train(cfg)
  tx = optim.optimizer(cfg)
  if cfg.data_parallel:
    data_parallel.batch_mesh(cfg.batch_size)  # the batch must split over the devices
  task = TASKS.get(config.task.name)(config.task, cfg.batch_size, cfg.seed)
  model = build(config.model, task.in_features, task.out_features, nnx.Rngs(cfg.seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = params.to_pure_dict()
  state = {"params": params, "rest": rest.to_pure_dict(), "opt_state": tx.init(params),
           "step": 0}
  return task, graphdef, state, tx


def _check_seed_group(configs: list[ml_collections.ConfigDict], workdirs: list[str]) -> None:
  """Runs trained together must differ in `train.seed` only, with distinct seeds and dirs."""
  if not configs or len(configs) != len(workdirs):
    raise ValueError(f"need one workdir per config, got {len(configs)} configs and "
                     f"{len(workdirs)} workdirs")
  first = _comparable(configs[0])
  for config in configs[1:]:
    changed = run_dir.differences(first, _comparable(config))
    if changed:
      raise ValueError("runs trained together may differ in train.seed only, not in "
                       + "; ".join(changed[:5]))
  for name, values in (("train.seed", [c.train.seed for c in configs]),
                       ("workdir", [os.path.abspath(w) for w in workdirs])):
    if len(set(values)) < len(values):
      raise ValueError(f"runs trained together need distinct {name}s, got {values}")


def _comparable(config: ml_collections.ConfigDict) -> dict[str, Any]:
  d = config.to_dict()
  d["train"].pop("seed")
  return d


class _Run:
  """One run of a group: its config, task, files and progress."""

  def __init__(self, config, workdir, task, ckpt, lead):
    self.config, self.workdir, self.task, self.ckpt = config, workdir, task, ckpt
    self.lead = lead  # this process writes the run's files (process 0 of a multi-host job)
    self.writer = MetricWriter(workdir) if lead else None
    self.started_at = time.time()
    self.window: list[dict[str, float]] = []
    self.metrics: dict[str, float] = {}
    self.diverged: str | None = None  # the message, once it diverged

  def status(self, **fields: Any) -> None:
    if self.lead:
      write_status(self.workdir, wall_time=time.time() - self.started_at, **fields)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> dict[str, float]:
  """Train, evaluate and checkpoint as `config` says; returns the final eval metrics."""
  return train_seeds([config], [workdir], overwrite)[0]


def train_seeds(configs: list[ml_collections.ConfigDict], workdirs: list[str],
                overwrite: bool = False) -> list[dict[str, float]]:
  """Train K runs that differ only in `train.seed` as one `jax.vmap`ped program (K > 1).

  Each run keeps its own workdir, exactly as `train_and_evaluate` writes it (config.json,
  events, checkpoints, status.json), so a run can be resumed alone or in any group. The
  data of seed k at step s is the same batch as in a run of its own; only the float
  summation order of the batched matmuls differs. A run that diverges is marked `diverged`
  at once and the others go on; `Diverged` is raised at the end if any did. Returns each
  run's final eval metrics.
  """
  _check_seed_group(configs, workdirs)
  built = [init_state(c) for c in configs]
  tasks, states = [b[0] for b in built], [b[2] for b in built]
  _, graphdef, _, tx = built[0]
  for config, workdir in zip(configs, workdirs):
    run_dir.prepare(workdir, config.to_dict(), overwrite)  # nothing is written before this
  lead = jax.process_index() == 0
  runs = [_Run(c, w, t, Checkpointer(f"{w}/checkpoints", max_to_keep=c.train.max_to_keep),
               lead) for c, w, t in zip(configs, workdirs, tasks)]
  try:
    for i, run in enumerate(runs):
      restored = run.ckpt.restore(states[i])
      if restored is not None:
        states[i] = restored[1]
        logging.info("%s: resumed from step %d", run.workdir, int(states[i]["step"]))
    steps = sorted({int(s["step"]) for s in states})
    if len(steps) > 1:
      raise ValueError(f"runs trained together must resume from one step, but their "
                       f"checkpoints are at steps {steps}; run them separately")
    for run in runs:
      run.status(state="running", step=steps[0], message=None)
      if run.writer:
        run.writer.write_hparams(run_dir.flat(run.config.to_dict()))
    _loop(runs, graphdef, tx, states)
  except Diverged:
    raise
  except BaseException as err:
    for run in runs:
      if not run.diverged:
        run.status(state="failed", message=f"{type(err).__name__}: {err}")
    raise
  finally:
    for run in runs:
      run.ckpt.close()
      if run.writer:
        run.writer.close()
  bad = [run.diverged for run in runs if run.diverged]
  if bad:
    raise Diverged("; ".join(bad))
  return [run.metrics for run in runs]


def _stack(trees: list[Any]) -> Any:
  return trees[0] if len(trees) == 1 else jax.tree.map(lambda *x: np.stack(x), *trees)


def _member(tree: Any, k: int, group: bool) -> Any:
  return jax.tree.map(lambda x: x[k], tree) if group else tree


def _loop(runs: list[_Run], graphdef, tx, states) -> None:
  """The training loop of one run or a vmapped group; fills each run's metrics and status."""
  cfg, group = runs[0].config.train, len(runs) > 1
  start = int(states[0]["step"])
  step_fn = train_step_fn(graphdef, runs[0].task, tx)
  train_step = jax.jit(jax.vmap(step_fn) if group else step_fn)
  flow = jax.jit(lambda p, r, b: diagnostics.gradient_flow(graphdef, p, r, b,
                                                          runs[0].task.loss))
  if not diagnostics.gradient_flow_ok(graphdef, states[0]):
    flow = None
    logging.warning("gradient flow (grad_flow/*) is not measured: its probes run the model "
                    "step by step, which whole-sequence norm statistics do not allow")
  flow_batch = {k: v[:cfg.batch_size] for k, v in runs[0].task.eval_batches()[0].items()}
  lr = optim.schedule(cfg)
  predict = make_predict(graphdef, states[0])
  mesh = data_parallel.batch_mesh(cfg.batch_size) if cfg.data_parallel else None
  state = _stack(states)
  if mesh is not None:
    state = data_parallel.replicate(mesh, state)
  live = list(runs)
  seeds = np.array([run.config.train.seed for run in runs] if group else runs[0].config.train.seed,
                   np.uint32)
  with _sigterm_flag() as sigterm:
    tick, timed = time.time(), 0  # steps/s leaves out the first step, which compiles
    for step in range(start, cfg.steps):
      batch = _stack([run.task.train_batch(step) for run in runs])
      if mesh is not None:
        batch = data_parallel.shard_batch(mesh, batch, axis=int(group))
      state, out = train_step(state, batch, seeds)
      out = jax.device_get(out)  # one transfer a step
      done, timed = step + 1, timed + 1
      if step == start and done % cfg.log_every:
        tick, timed = time.time(), 0
      for k, run in enumerate(runs):  # k indexes the vmapped outputs
        if run not in live:
          continue
        values = {key: float(v[k] if group else v) for key, v in out.items()}
        if all(math.isfinite(v) for v in values.values()):
          run.window.append(values)
        else:
          _diverge(run, values, done, group)
          live.remove(run)
      if not live:
        break
      log = done % cfg.log_every == 0 or done == cfg.steps
      diag = done % cfg.diagnostics_every == 0 or done == cfg.steps
      evaluate = done % cfg.eval_every == 0 or done == cfg.steps
      save = done % cfg.checkpoint_every == 0 or done == cfg.steps or sigterm["stop"]
      if not (log or diag or evaluate or save):
        continue
      host = jax.device_get(state)
      rate = None
      for k, run in enumerate(runs):
        if run not in live:
          continue
        mine = _member(host, k, group)
        if log:
          rate = rate or timed / max(time.time() - tick, 1e-9)
          _log(run, done, mine, rate, lr(step), group)
        if diag and run.writer and flow is not None:
          norms = np.asarray(flow(mine["params"], mine["rest"], flow_batch))
          run.writer.write_images(done, {"grad_flow/norm_dL_dh": norms}, log=True)
          run.writer.write_scalars(done, {f"grad_flow/ratio_first_last/layer_{l}":
                                          float(row[0] / max(row[-1], 1e-30))
                                          for l, row in enumerate(norms)})
        if evaluate:
          run.metrics = _evaluate(run.task, predict, mine)
          if run.writer:
            run.writer.write_scalars(done, {f"eval/{k}": v for k, v in run.metrics.items()})
          logging.info("%seval at step %d: %s", _who(run, group), done,
                       ", ".join(f"{k}={v:.5g}" for k, v in run.metrics.items()))
        if save:
          run.ckpt.save(done, mine)
          run.status(step=done)
      if log:
        tick, timed = time.time(), 0
      if sigterm["stop"]:
        for run in live:
          run.status(state="preempted", step=done)
        logging.warning("SIGTERM: saved step %d and stopped; rerun to resume", done)
        return
  host = jax.device_get(state)
  for k, run in enumerate(live):
    if not run.metrics:  # resumed at the end: evaluate what the checkpoint holds
      run.metrics = _evaluate(run.task, predict, _member(host, k, group))
    run.status(state="completed", step=int(_member(host, k, group)["step"]),
               metrics=run.metrics)


def _who(run: _Run, group: bool) -> str:
  return f"seed {run.config.train.seed}: " if group else ""


def _log(run: _Run, done: int, state: dict[str, Any], rate: float, lr: float,
         group: bool) -> None:
  cfg = run.config.train
  scalars = {k: float(np.mean([w[k] for w in run.window])) for k in run.window[0]}
  scalars.update({"train/learning_rate": float(lr), "perf/steps_per_sec": rate,
                  **diagnostics.spectral_norms(state["params"])})
  if run.writer:
    run.writer.write_scalars(done, scalars)
  logging.info("%sstep %d/%d  loss %.5g  %.1f steps/s  ETA %.0f s", _who(run, group), done,
               cfg.steps,
               scalars["train/loss"], rate, (cfg.steps - done) / rate)
  run.window = []


def _diverge(run: _Run, values: dict[str, float], done: int, group: bool) -> None:
  """Marks `run` diverged at step `done` (its last good checkpoint stays intact)."""
  bad = ", ".join(k for k, v in values.items() if not math.isfinite(v))
  last = run.ckpt.latest_step()
  kept = ("no checkpoint was saved before it" if last is None
          else f"the last good checkpoint (step {last}) is kept")
  who = f"{run.workdir} " if group else ""
  run.diverged = f"{who}diverged at step {done}: non-finite {bad}; {kept}"
  run.status(state="diverged", step=done, message=run.diverged)
  if group:
    logging.error("%s", run.diverged)
