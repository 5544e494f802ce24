"""Closed-loop rollouts of a trained `pendulum` or `temperature` run beside its filter.

A rollout takes one held-out sequence, inputs x_0..x_{W+N-1} and targets y*_0..y*_{W+N-1}.
The model streams (`model.step`, one jitted `lax.scan` for the K rollouts as one batch):

  warm-up   t <  W:  input x_t (the real one): the model filters
  horizon   t >= W:  input f(y_{t-1}, x_t): the model's own previous output, fed back

so every output depends on x_0..x_{W-1} only. f also gets the real x_t, which the tasks' f
ignore (f(y, x) = x is the open loop, a check of the scan). The feedback f per task:

  temperature  f(y) = y: the forecast x_hat_t of hour t (made at t - 1) is the input at t.
  pendulum     f(y) = (sin th, cos th), th = atan2(y_sin, y_cos): the model's estimate of the
               angle at t - 1, fed as the next observation: the noise-free point on the circle
               the model believes in (a filter estimates the present, so this observation
               lags the true angle by one step).

The filter beside it runs the same closed loop on x_0..x_{W-1}:

  temperature  persistence: x_t for t < W, then the last observed value x_{W-1} held.
  pendulum     the EKF with measurement updates through t = W - 1, then prediction-only
               steps (no update) for the horizon, `pendulum.predict_mean` repeated.

Scores: per rollout, the MSE over the horizon steps W..W+N-1 (mean over the outputs, as the
task's `mse`) of the model and of the filter, against the targets.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rnn_research.tasks import pendulum
from rnn_research.training import run_loader

Feedback = Callable[[jax.Array, jax.Array], jax.Array]  # (y_{t-1} [B, O], x_t [B, F]) -> input


def temperature_feedback(y: jax.Array, x: jax.Array) -> jax.Array:
  """The forecast of the next hour [B, 1] is the next input."""
  del x
  return y


def pendulum_feedback(y: jax.Array, x: jax.Array) -> jax.Array:
  """(sin th, cos th) [B, 2] of the estimated angle th = atan2(y[:, 0], y[:, 1])."""
  del x
  theta = jnp.arctan2(y[:, 0], y[:, 1])
  return jnp.stack([jnp.sin(theta), jnp.cos(theta)], -1).astype(y.dtype)


def persistence(task: object, xs: np.ndarray, warmup: int) -> np.ndarray:
  """Persistence in closed loop [B, T, 1]: x_t for t < W, then x_{W-1} held."""
  del task
  steps = np.minimum(np.arange(xs.shape[1]), warmup - 1)
  return np.asarray(xs, np.float32)[:, steps]


def ekf_closed_loop(task: pendulum.Pendulum, xs: np.ndarray, warmup: int) -> np.ndarray:
  """The EKF [B, T, 3]: filtered on x_0..x_{W-1}, then its mean predicted without updates."""
  c = task.cfg
  est = np.empty(xs.shape[:2] + (3,))
  est[:, :warmup] = pendulum.ekf(xs[:, :warmup], c.dt, c.natural_frequency, c.damping,
                                 c.process_noise, c.obs_noise, c.omega_init_std)
  theta, omega = np.arctan2(est[:, warmup - 1, 0], est[:, warmup - 1, 1]), est[:, warmup - 1, 2]
  for t in range(warmup, xs.shape[1]):
    theta, omega = pendulum.predict_mean(theta, omega, c.dt, c.natural_frequency, c.damping)
    est[:, t] = np.stack([np.sin(theta), np.cos(theta), omega], -1)
  return est.astype(np.float32)


# task name -> (feedback, the filter's name, its closed loop (task, xs, W) -> [B, T, O])
TASKS = {
    "pendulum": (pendulum_feedback, "ekf", ekf_closed_loop),
    "temperature": (temperature_feedback, "persistence", persistence),
}


@functools.partial(jax.jit, static_argnames=("graph", "feedback"))
def _scan(graph, params, rest, xs: jax.Array, warmup: jax.Array, feedback: Feedback
          ) -> jax.Array:
  """xs [B, T, F] -> ys [B, T, O]: real inputs for t < warmup (x_0 always), then f(y_{t-1})."""
  model = nnx.merge(graph, params, rest)
  state, y_0 = model.step(model.initial_state(xs.shape[0]), xs[:, 0])

  def step(carry, inp):
    state, y_prev = carry
    t, x_t = inp
    x_t = jnp.where(t < warmup, x_t, feedback(y_prev, x_t))
    state, y_t = model.step(state, x_t)
    return (state, y_t), y_t

  later = (jnp.arange(1, xs.shape[1]), jnp.swapaxes(xs[:, 1:], 0, 1))
  _, ys = jax.lax.scan(step, (state, y_0), later)
  return jnp.concatenate([y_0[:, None], jnp.swapaxes(ys, 0, 1)], 1)


def closed_loop(model: nnx.Module, xs: np.ndarray, warmup: int, feedback: Feedback
                ) -> np.ndarray:
  """The model's outputs [B, T, O] with the real inputs xs [B, T, F] for t < warmup (>= 1) and
  its fed-back outputs after; warmup >= T is the open-loop (full-sequence) output."""
  if warmup < 1:
    raise ValueError(f"warmup must be >= 1 (the first input is real), got {warmup}")
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  return np.asarray(_scan(graph, params, rest, jnp.asarray(xs, jnp.float32),
                          jnp.int32(warmup), feedback))


@dataclass(frozen=True)
class Rollout:
  """K rollouts of one run: held-out rows [K]; truth, model and filter outputs [K, W+N, O]."""
  task: str
  filter_name: str
  rows: np.ndarray
  warmup: int
  truth: np.ndarray
  model: np.ndarray
  filter: np.ndarray

  def horizon_mse(self, ys: np.ndarray) -> np.ndarray:
    """MSE [K] of ys [K, W+N, O] over the horizon steps W..W+N-1 and the outputs."""
    return np.mean((ys - self.truth)[:, self.warmup:] ** 2, axis=(1, 2))


def check_flags(warmup: int, horizon: int, num_rollouts: int) -> None:
  """ValueError naming the flag and its valid range for a bad value."""
  for flag, value in (("warmup", warmup), ("horizon", horizon), ("num_rollouts", num_rollouts)):
    if value < 1:
      raise ValueError(f"--{flag} must be >= 1, got {value}")


def check_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """ValueError unless the run's task has a closed loop here and its model is causal."""
  name = config.task.name
  if name not in TASKS:
    hint = (" (for charlm, generate text with python -m rnn_research.sample)"
            if name == "charlm" else "")
    raise ValueError(f"rollout needs a run of task {' or '.join(TASKS)}, {workdir} holds task "
                     f"{name!r}{hint}")
  direction = config.model.get("bidirectional", "none")
  if direction != "none":
    raise ValueError(f"{workdir} holds a bidirectional model (config.model.bidirectional="
                     f"{direction!r}): it cannot stream; rollout needs bidirectional='none'")


def held_out(task: object) -> tuple[np.ndarray, np.ndarray]:
  """The task's held-out inputs [n, T, F] and targets [n, T, O], without padding rows."""
  batches = task.eval_batches()
  return tuple(np.concatenate([b[k] for b in batches])[:task.eval_size] for k in ("x", "y"))


def run(workdir: str, warmup: int, horizon: int, num_rollouts: int, seed: int) -> Rollout:
  """K = num_rollouts held-out sequences (a seeded draw without replacement) of the run in
  `workdir`, rolled out for W = warmup real and N = horizon fed-back steps."""
  check_flags(warmup, horizon, num_rollouts)
  config = run_loader.load_config(workdir)
  check_run(config, workdir)
  task, model = run_loader.load_model(workdir, config)
  if not model.per_step_ok():
    raise ValueError(f"{workdir} holds a model whose norm uses whole-sequence statistics "
                     "(eval_norm_stats='sequence'): it cannot stream")
  xs, ys = held_out(task)
  n, length = xs.shape[:2]
  if warmup + horizon > length:
    raise ValueError(f"--warmup + --horizon = {warmup + horizon} is longer than the held-out "
                     f"sequences: at most {length} steps (config.task.length)")
  if num_rollouts > n:
    raise ValueError(f"--num_rollouts must be in [1, {n}] (the held-out sequences), got "
                     f"{num_rollouts}")
  rows = np.random.default_rng(seed).permutation(n)[:num_rollouts]
  xs, ys = xs[rows, :warmup + horizon], ys[rows, :warmup + horizon]
  feedback, filter_name, filter_loop = TASKS[config.task.name]
  return Rollout(config.task.name, filter_name, rows, warmup, ys,
                 closed_loop(model, xs, warmup, feedback), filter_loop(task, xs, warmup))
