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
import signal
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from rnn_research import diagnostics, optim, workdir as run_dir
from rnn_research.checkpointing import Checkpointer
from rnn_research.metric_writer import MetricWriter
from rnn_research.models import build
from rnn_research.status import write_status
from rnn_research.tasks import TASKS

_POSITIVE = ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every",
             "diagnostics_every")


class Diverged(RuntimeError):
  """A non-finite loss or gradient; the run stopped at that step."""


def _check_train(cfg: Any) -> None:
  for key in _POSITIVE:
    if not isinstance(cfg[key], int) or cfg[key] < 1:
      raise ValueError(f"config.train.{key} must be a positive integer, got {cfg[key]!r}")
  if not cfg.learning_rate > 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {cfg.learning_rate!r}")


def make_train_step(graphdef: Any, task: Any, tx: optax.GradientTransformation):
  """The jitted pure step: (state, batch) -> (state, metrics)."""

  def train_step(state: dict[str, Any], batch: dict[str, jax.Array]):
    def loss_fn(params):
      model = nnx.merge(graphdef, params, state["rest"])
      loss = task.loss(model(batch["x"], batch["mask"]), batch)
      return loss, nnx.split(model, nnx.Param, ...)[2].to_pure_dict()

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"params": optax.apply_updates(state["params"], updates), "rest": rest,
           "opt_state": opt_state, "step": state["step"] + 1}
    metrics = {"train/loss": loss, "grad/global_norm": optax.tree.norm(grads),
               **diagnostics.layer_grad_norms(grads)}
    return new, metrics

  return jax.jit(train_step)


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
  """The jitted eval-mode call (params, rest, x, mask) -> ys; compiled once per run."""
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  eval_graph = nnx.split(model, nnx.Param, ...)[0]
  return jax.jit(lambda p, r, x, m: nnx.merge(eval_graph, p, r)(x, m))


def _evaluate(task: Any, predict: Any, state: dict[str, Any]) -> dict[str, float]:
  return task.evaluate(
      lambda b: np.asarray(predict(state["params"], state["rest"], b["x"], b["mask"])))


def init_state(config: ml_collections.ConfigDict):
  """Validate `config` and build (task, graphdef, state, tx); writes nothing anywhere."""
  cfg = config.train
  _check_train(cfg)
  tx = optim.optimizer(cfg)
  task = TASKS.get(config.task.name)(config.task, cfg.batch_size, cfg.seed)
  model = build(config.model, task.in_features, task.out_features, nnx.Rngs(cfg.seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = params.to_pure_dict()
  state = {"params": params, "rest": rest.to_pure_dict(), "opt_state": tx.init(params),
           "step": 0}
  return task, graphdef, state, tx


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> dict[str, float]:
  """Train, evaluate and checkpoint as `config` says; returns the final eval metrics."""
  task, graphdef, state, tx = init_state(config)
  cfg = config.train
  run_dir.prepare(workdir, config.to_dict(), overwrite)  # nothing is written before this

  ckpt = Checkpointer(f"{workdir}/checkpoints", max_to_keep=cfg.max_to_keep)
  restored = ckpt.restore(state)
  if restored is not None:
    state = restored[1]
    logging.info("resumed from step %d", int(state["step"]))
  started_at = time.time()
  write_status(workdir, state="running", step=int(state["step"]), message=None)
  try:
    state, metrics = _loop(config, workdir, task, graphdef, tx, state, ckpt, started_at)
  except Diverged:
    raise
  except BaseException as err:
    write_status(workdir, state="failed", message=f"{type(err).__name__}: {err}",
                 wall_time=time.time() - started_at)
    raise
  finally:
    ckpt.close()
  if state is None:  # preempted
    return metrics
  if not metrics:  # resumed at the end: evaluate what the checkpoint holds
    metrics = _evaluate(task, make_predict(graphdef, state), state)
  write_status(workdir, state="completed", step=int(state["step"]), metrics=metrics,
               wall_time=time.time() - started_at)
  return metrics


def _loop(config, workdir, task, graphdef, tx, state, ckpt, started_at):
  """The training loop; returns (final state or None if preempted, last eval metrics)."""
  cfg = config.train
  start = int(state["step"])
  train_step = make_train_step(graphdef, task, tx)
  flow = jax.jit(lambda p, r, b: diagnostics.gradient_flow(graphdef, p, r, b, task.loss))
  flow_batch = {k: v[:cfg.batch_size] for k, v in task.eval_batches()[0].items()}
  lr = optim.schedule(cfg)
  predict = make_predict(graphdef, state)
  metrics: dict[str, float] = {}
  with MetricWriter(workdir) as writer, _sigterm_flag() as sigterm:
    window, tick = [], time.time()
    for step in range(start, cfg.steps):
      new, out = train_step(state, task.train_batch(step))
      out = {k: float(v) for k, v in jax.device_get(out).items()}  # one transfer a step
      if not all(math.isfinite(v) for v in out.values()):
        bad = ", ".join(k for k, v in out.items() if not math.isfinite(v))
        last = ckpt.latest_step()
        kept = ("no checkpoint was saved before it" if last is None
                else f"the last good checkpoint (step {last}) is kept")
        message = f"diverged at step {step + 1}: non-finite {bad}; {kept}"
        write_status(workdir, state="diverged", step=step + 1, message=message,
                     wall_time=time.time() - started_at)
        raise Diverged(message)
      state, done = new, step + 1
      window.append(out)
      if done % cfg.log_every == 0 or done == cfg.steps:
        rate = len(window) / max(time.time() - tick, 1e-9)
        scalars = {k: float(np.mean([w[k] for w in window])) for k in out}
        scalars.update({"train/learning_rate": float(lr(step)), "perf/steps_per_sec": rate,
                        **diagnostics.spectral_norms(state["params"])})
        writer.write_scalars(done, scalars)
        logging.info("step %d/%d  loss %.5g  %.1f steps/s  ETA %.0f s", done, cfg.steps,
                     scalars["train/loss"], rate, (cfg.steps - done) / rate)
        window, tick = [], time.time()
      if done % cfg.diagnostics_every == 0 or done == cfg.steps:
        norms = np.asarray(flow(state["params"], state["rest"], flow_batch))
        writer.write_images(done, {"grad_flow/norm_dL_dh": norms}, log=True)
        writer.write_scalars(done, {f"grad_flow/ratio_first_last/layer_{l}":
                                    float(row[0] / max(row[-1], 1e-30))
                                    for l, row in enumerate(norms)})
      if done % cfg.eval_every == 0 or done == cfg.steps:
        metrics = _evaluate(task, predict, state)
        writer.write_scalars(done, {f"eval/{k}": v for k, v in metrics.items()})
        logging.info("eval at step %d: %s", done,
                     ", ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
      if done % cfg.checkpoint_every == 0 or done == cfg.steps or sigterm["stop"]:
        ckpt.save(done, state)
        write_status(workdir, step=done, wall_time=time.time() - started_at)
      if sigterm["stop"]:
        write_status(workdir, state="preempted", step=done)
        logging.warning("SIGTERM: saved step %d and stopped; rerun to resume", done)
        return None, metrics
  return state, metrics
