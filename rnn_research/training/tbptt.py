"""Truncated backpropagation through time with carried state (`train.tbptt_window` = K > 0).

Each training row is a long stream of the task's long-stream form (`task.stream_length` S, a
multiple of K); step n trains on window n mod (S / K) of the current streams
(tasks/streams.py). The carry entering window n + 1 is the final carry of window n, with the
gradient stopped (Keras `stateful=True`, PyTorch's `h = h.detach()`):

  carry_in = h_0                          in rows whose stream starts here (`fresh`)
           = stop_gradient(h_K of window n) otherwise

so no gradient reaches an earlier window, and with K = S every window is fresh: full BPTT.
The carry is `state["carry"]`, a pytree of the training state, so checkpoints hold it and a
resumed run goes on exactly. Evaluation runs each held-out row from h_0 through its whole
length in windows of K steps carrying the state (`windowed_predict`): a row of any length
(charlm's `eval_length`, multiscale's `length`) is one long stream, with one window of it on
the device at a time.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rnn_research.tasks import TASKS
from rnn_research.tasks.base import Batch, Task
from rnn_research.tasks.streams import Streams


def check(config: ml_collections.ConfigDict, task: Task, model: Any) -> None:
  """Refuses `train.tbptt_window` and `task.stream_length` where they do not compose with each
  other, the task or the model (in training mode): one ValueError naming the reason."""
  window, length = config.train.get("tbptt_window", 0), task.cfg.get("stream_length", 0)
  if not window:
    if length:
      raise ValueError(f"config.task.stream_length={length} is the long-stream form of "
                       "truncated BPTT: set config.train.tbptt_window to a divisor of it, or "
                       "stream_length=0 to train on crops of task.length")
    return
  if not isinstance(task, Streams):
    names = ", ".join(n for n in TASKS.names() if issubclass(TASKS.get(n), Streams))
    raise ValueError(f"config.train.tbptt_window={window} needs a task with a long-stream "
                     f"form (task.stream_length): {names}; task {task.name!r} has none")
  if not length or length % window:
    raise ValueError(f"config.task.stream_length={length} must be a positive multiple of "
                     f"config.train.tbptt_window={window}")
  if task.cfg.pack != 1:
    raise ValueError(f"config.task.pack={task.cfg.pack}: a stream row is one long episode "
                     "already; use pack=1 with config.train.tbptt_window")
  if config.model.bidirectional != "none":
    raise ValueError(f"config.model.bidirectional={config.model.bidirectional!r} carries no "
                     "state from one window to the next (its backward stack reads each whole "
                     "sequence from its end); use 'none' with config.train.tbptt_window")
  if not model.per_step_ok():
    raise ValueError(f"config.model.norm={config.model.norm!r} normalises with statistics of "
                     "the whole window in training, so the carried state would not continue "
                     "the stream; use a norm of each step's own statistics (e.g. mini_layer) "
                     "or none with config.train.tbptt_window")


def train_batch(task: Task, step: int, window: int) -> Batch:
  """The batch of `step`: a window of the long streams (K > 0) or the task's own form."""
  return task.stream_window(step, window) if window else task.train_batch(step)


def carry_in(init: Any, carry: Any, fresh: jax.Array) -> Any:
  """`init` in the rows where fresh [B] is set, else stop_gradient(`carry`) (leaves [B, ...])."""
  def pick(i: jax.Array, c: jax.Array) -> jax.Array:
    f = jnp.reshape(fresh, fresh.shape + (1,) * (c.ndim - 1))
    return jnp.where(f, i, jax.lax.stop_gradient(c))

  return jax.tree.map(pick, init, carry)


def forward(model: Any, batch: dict[str, jax.Array], carry: Any, key: jax.Array | None
            ) -> tuple[jax.Array, Any]:
  """One window: ys [B, K, O] of batch x [B, K, F] and the carry it hands on."""
  start = carry_in(model.initial_state(batch["x"].shape[0]), carry, batch["fresh"])
  return model(batch["x"], batch["mask"], state=start, return_state=True,
               resets=batch.get("resets"), key=key)


def windowed_predict(eval_graph: Any, window: int) -> Callable[..., np.ndarray]:
  """(params, rest, x, mask, resets) -> ys [B, T, O] (numpy): each row from h_0, in windows of
  `window` steps carrying the state (the last one padded with masked steps); one compile."""
  call = jax.jit(lambda p, r, c, x, m, rs: nnx.merge(eval_graph, p, r)(
      x, m, state=c, return_state=True, resets=rs))
  start = jax.jit(lambda p, r, b: nnx.merge(eval_graph, p, r).initial_state(b),
                  static_argnums=2)

  def predict(params: Any, rest: Any, x: Any, mask: Any, resets: Any) -> np.ndarray:
    x = np.asarray(x)
    steps, pad = x.shape[1], [(0, 0), (0, -x.shape[1] % window)]
    mask = np.ones(x.shape[:2], bool) if mask is None else np.asarray(mask)
    x, mask = np.pad(x, pad + [(0, 0)]), np.pad(mask, pad)  # padding: mask False
    resets = None if resets is None else np.pad(np.asarray(resets), pad)
    carry, outs = start(params, rest, x.shape[0]), []
    for t in range(0, x.shape[1], window):
      cut = slice(t, t + window)
      ys, carry = call(params, rest, carry, x[:, cut], mask[:, cut],
                       None if resets is None else resets[:, cut])
      outs.append(np.asarray(ys))
    return np.concatenate(outs, axis=1)[:, :steps]

  return predict
