"""`train_and_evaluate(config, workdir)`: train one model of `config.model` on `config.task`.

Writes into `workdir`: `config.json` (resolved config), TensorBoard event files, orbax
checkpoints in `checkpoints/` (params, optimizer state, step, and with truncated BPTT the
carried state; the data of step k is a pure function of (seed, k), so the step is the data
position) and `status.json`
(`state`: running | completed | diverged | failed | preempted, last step, final metrics, wall
time summed over restarts). Rerunning the same command resumes from the latest checkpoint;
SIGTERM or SIGINT (Ctrl-C) saves and exits. The first non-finite loss or gradient, or a train
or eval loss above `train.max_loss`, stops the run at that step (`Diverged`; the last good
checkpoint stays intact). Milestone intervals left unset follow `train.steps` (`loop.cadence`).
The loop itself, of one run or of vmapped seeds: loop.py.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import ml_collections
import optax
from absl import logging
from flax import nnx

from rnn_research.core.models import build
from rnn_research.tasks import TASKS
from rnn_research.training import (data_parallel, diagnostics, lock, optim, provenance,
                                   tbptt, workdir as run_dir)
from rnn_research.training.loop import CADENCE, Loop, Run
from rnn_research.training.status import trained_under

_POSITIVE = ("steps", "batch_size", "max_to_keep")


class Diverged(RuntimeError):
  """A non-finite loss or gradient, or a loss above `train.max_loss`; the run stopped there."""


MATMUL_PRECISIONS = ("default", "high", "highest")  # jax.default_matmul_precision's names


def _check_train(cfg: Any) -> None:
  for key in _POSITIVE + tuple(CADENCE):
    value = cfg.get(key)
    if (value is not None or key in _POSITIVE) and (not isinstance(value, int) or value < 1):
      raise ValueError(f"config.train.{key} must be a positive integer, got {value!r}")
  max_loss = cfg.get("max_loss", float("inf"))
  if isinstance(max_loss, bool) or not isinstance(max_loss, (int, float)) or not max_loss > 0:
    raise ValueError(f"config.train.max_loss must be a number > 0, got {max_loss!r}")
  if not isinstance(cfg.data_parallel, bool):
    raise ValueError(f"config.train.data_parallel must be True or False, got {cfg.data_parallel!r}")
  if not cfg.learning_rate > 0:
    raise ValueError(f"config.train.learning_rate must be > 0, got {cfg.learning_rate!r}")
  if cfg.get("matmul_precision", "default") not in MATMUL_PRECISIONS:
    raise ValueError(f"unknown config.train.matmul_precision {cfg.get('matmul_precision')!r}; "
                     f"valid choices: {', '.join(MATMUL_PRECISIONS)}")
  window = cfg.get("tbptt_window", 0)
  if isinstance(window, bool) or not isinstance(window, int) or window < 0:
    raise ValueError(f"config.train.tbptt_window must be an integer >= 0 (0: off), got "
                     f"{window!r}")


def train_step_fn(graphdef: Any, task: Any,
                  optimizer: Callable[[jax.Array], optax.GradientTransformation]
                  ) -> Callable[..., tuple[dict[str, Any], dict[str, jax.Array]]]:
  """The pure step (state, batch, seed, learning_rate) -> (state, metrics); jit it, or vmap
  it over seeds. `optimizer(learning_rate)` is the optimiser whose schedule peaks at the
  float32 scalar `learning_rate`: an input, not a constant of the program, so that runs that
  differ only in it (a random search) share one compiled step.

  Dropout draws from fold_in(PRNGKey(seed), step): like the data, a pure function of (seed,
  step), so a resumed run repeats exactly the masks an uninterrupted one would draw. A state
  with a `carry` trains truncated BPTT: the batch is one window and the carry crosses it
  (tbptt.py).
  """

  def train_step(state: dict[str, Any], batch: dict[str, jax.Array], seed: jax.Array,
                 learning_rate: jax.Array):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), state["step"])
    carry = state.get("carry")

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state["rest"])
      if carry is None:
        ys, out = model(batch["x"], batch["mask"], resets=batch.get("resets"), key=key), None
      else:
        ys, out = tbptt.forward(model, batch, carry, key)
      loss = task.loss(ys, batch)
      return loss, (nnx.split(model, nnx.Param, ...)[2].to_pure_dict(), out)

    (loss, (rest, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    tx = optimizer(learning_rate)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new = {"params": optax.apply_updates(state["params"], updates), "rest": rest,
           "opt_state": opt_state, "step": state["step"] + 1}
    if carry is not None:
      new["carry"] = out
    metrics = {"train/loss": loss, "grad/global_norm": diagnostics.tree_norm(grads),
               **diagnostics.layer_grad_norms(grads)}
    return new, metrics

  return train_step


def make_predict(graphdef: Any, state: dict[str, Any], window: int = 0
                 ) -> Callable[..., jax.Array]:
  """The jitted eval-mode call (params, rest, x, mask, resets) -> ys; compiled once per run.
  With `window` > 0 (truncated BPTT) it runs each row in windows carrying the state."""
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  eval_graph = nnx.split(model, nnx.Param, ...)[0]
  if window:
    return tbptt.windowed_predict(eval_graph, window)
  return jax.jit(lambda p, r, x, m, rs: nnx.merge(eval_graph, p, r)(x, m, resets=rs))


def init_state(config: ml_collections.ConfigDict
               ) -> tuple[Any, Any, dict[str, Any], Callable[..., optax.GradientTransformation]]:
  """Validate `config` and build (task, graphdef, state, optimizer); writes nothing anywhere.
  `optimizer(learning_rate)`: `optim.optimizer` of config.train at that peak rate."""
  cfg = config.train
  _check_train(cfg)
  optimizer = functools.partial(optim.optimizer, cfg)
  tx = optimizer(cfg.learning_rate)  # checks the optimiser's choices before anything is built
  if cfg.data_parallel:
    data_parallel.batch_mesh(cfg.batch_size)  # the batch must split over the devices
  task = TASKS.get(config.task.name)(config.task, cfg.batch_size, cfg.seed)
  model = build(config.model, task.in_features, task.out_features, nnx.Rngs(cfg.seed))
  tbptt.check(config, task, model)
  graphdef, state = fresh_state(model, tx)
  if cfg.get("tbptt_window", 0):  # the carried state; `fresh` replaces it at step 0
    state["carry"] = model.initial_state(cfg.batch_size)
  return task, graphdef, state, optimizer


def fresh_state(model: nnx.Module, tx: optax.GradientTransformation
                ) -> tuple[Any, dict[str, Any]]:
  """(graphdef, the train state at step 0): parameters, the rest of the model's state (norm
  statistics) and the optimiser's state, as pure dicts."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = params.to_pure_dict()
  return graphdef, {"params": params, "rest": rest.to_pure_dict(),
                    "opt_state": tx.init(params), "step": 0}


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
  states = [b[2] for b in built]
  task, graphdef, _, optimizer = built[0]
  lead = jax.process_index() == 0
  with lock.hold(*(workdirs if lead else ())):  # one writer per workdir, before any write
    done = [run_dir.finished(w, c.to_dict()) for c, w in zip(configs, workdirs)]
    if all(done):  # all completed at train.steps: nothing is trained or rewritten
      for workdir, status in zip(workdirs, done):
        logging.info("%s: already completed at step %d; nothing to do", workdir, status["step"])
      return [status.get("metrics", {}) for status in done]
    for config, workdir in zip(configs, workdirs):
      run_dir.prepare(workdir, config.to_dict(), overwrite)
    runs = [Run(c, w, b[0], k if len(configs) > 1 else None, lead)
            for k, (c, w, b) in enumerate(zip(configs, workdirs, built))]
    try:
      start = _resume(runs, states)
      code, commit = provenance.code_fingerprint(), provenance.git_commit()
      for run in runs:
        run.status(state="running", step=start, message=None,
                   main_metric=list(run.task.main_metric),  # for compare, which has no jax
                   **trained_under(run.workdir, code, commit))  # for the report
        if run.writer:
          run.writer.write_hparams(run_dir.flat(run.config.to_dict()), [run.task.main_metric[0]])
      loop = Loop(runs, graphdef, train_step_fn(graphdef, task, optimizer),
                  make_predict(graphdef, states[0], configs[0].train.get("tbptt_window", 0)),
                  states)
      with jax.default_matmul_precision(configs[0].train.get("matmul_precision", "default")):
        loop.run(start)
    except BaseException as err:  # a second Ctrl-C (the first one saves) is resumable
      state = "preempted" if isinstance(err, KeyboardInterrupt) else "failed"
      for run in runs:
        if not run.diverged:
          run.status(state=state, message=f"{type(err).__name__}: {err}")
      raise
    finally:
      for run in runs:
        run.close()
  bad = [run.diverged for run in runs if run.diverged]
  if bad:
    raise Diverged("; ".join(bad))
  return [run.metrics for run in runs]


def _resume(runs: list[Run], states: list[dict[str, Any]]) -> int:
  """Replaces each run's state by its latest checkpoint, if any; returns their common step."""
  for i, run in enumerate(runs):
    restored = run.ckpt.restore(states[i])
    if restored is not None:
      states[i] = restored[1]
      logging.info("%s: resumed from step %d", run.workdir, int(states[i]["step"]))
  steps = sorted({int(s["step"]) for s in states})
  if len(steps) > 1:
    raise ValueError(f"runs trained together must resume from one step, but their "
                     f"checkpoints are at steps {steps}; run them separately")
  return steps[0]
