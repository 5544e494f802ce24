"""engine='cudnn': the whole standard-LSTM stack in one cuDNN kernel (`jax.experimental.rnn.lstm`).

cuDNN takes one flat weight vector; for L layers (`jax.experimental.rnn`'s layout, torch's names)
  [W_ih^0, W_hh^0, ..., W_ih^{L-1}, W_hh^{L-1}, b_ih^0, b_hh^0, ..., b_ih^{L-1}, b_hh^{L-1}]
  W_ih^l = w_x^lᵀ [4H, F_l],  W_hh^l = w_h^lᵀ [4H, H],  b_ih^l = b^l [4H],  b_hh^l = 0 [4H]
with gate blocks i, f, g, o in every one (our standard LSTM's order), and computes per layer
  z_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh,  c_t = σ(z_f) c_{t-1} + σ(z_i) tanh(z_g),
  h_t = σ(z_o) tanh(c_t),
our standard tanh LSTM step. It reads a mask [T, B] as sequence lengths n_b = Σ_t m_{t,b}: steps
t < n_b run, later ones give y_t = 0, and (h_n, c_n) is the carry after step n_b - 1. That is our
convention (past a sequence's end the carry is frozen, y_t = 0) when every row's mask is a prefix
(valid steps first, no holes). The kernel runs on NVIDIA GPUs only, in float32.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import rnn

from rnn_research.core.carry import Carry

if TYPE_CHECKING:
  from rnn_research.core.spec import ModelSpec

State = tuple[Carry, ...]
Kernel = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
_BACKENDS = ("gpu", "cuda")


def pack(weights: list[dict[str, Any]], input_size: int, hidden_size: int) -> jax.Array:
  """Our layers' {w_x [F_l, 4H], b [4H], w_h [H, 4H], pw} -> cuDNN's flat vector (module
  docstring), of `rnn.get_num_params_in_lstm(input_size, hidden_size, L, False)` entries."""
  for l, w in enumerate(weights):
    rows = input_size if l == 0 else hidden_size
    if w["w_x"].shape != (rows, 4 * hidden_size) or w["w_h"].shape != (hidden_size,
                                                                        4 * hidden_size):
      raise ValueError(f"layer {l}: cuDNN needs w_x [{rows}, {4 * hidden_size}] and w_h "
                       f"[{hidden_size}, {4 * hidden_size}], got {w['w_x'].shape} and "
                       f"{w['w_h'].shape}")
    if w["pw"] or "bn" in w:
      raise ValueError(f"layer {l} has parameters cuDNN's LSTM has no place for: "
                       f"{sorted(w['pw']) + (['bn'] if 'bn' in w else [])}")
  mats = [m.T.ravel() for w in weights for m in (w["w_x"], w["w_h"])]
  biases = [v for w in weights for v in (w["b"], jnp.zeros_like(w["b"]))]
  return jnp.concatenate(mats + biases)


def lengths(mask: jax.Array | None, steps: int, batch: int) -> jax.Array:
  """Sequence lengths [B] int32 of a time-major mask [T, B] (no mask: all T).

  cuDNN reads lengths, so a mask must be a prefix per row. A concrete mask with a hole raises
  ValueError; a traced one (under jit) cannot be checked, and its holes are read as lengths
  (the count of valid steps), i.e. as if the valid steps came first.
  """
  if mask is None:
    return jnp.full((batch,), steps, jnp.int32)
  if not isinstance(mask, jax.core.Tracer):
    m = np.asarray(mask, bool)
    if np.any(m[1:] & ~m[:-1]):
      raise ValueError("engine='cudnn' reads the mask as sequence lengths, so each row must be "
                       "valid steps then padding (no holes); this mask has a hole: use "
                       "engine='auto'")
  return jnp.sum(mask, axis=0, dtype=jnp.int32)


def run_stack(weights: list[dict[str, Any]], xs: jax.Array, mask: jax.Array | None,
              state: State, *, hidden_size: int, resets: jax.Array | None = None,
              kernel: Kernel = rnn.lstm, precision: Any = None) -> tuple[jax.Array, State]:
  """All L layers in one kernel call: xs [T, B, F], mask [T, B] (a prefix per row, see
  `lengths`) or None, state: one Carry(h [B, H], c [B, H]) per layer
  -> (top h [T, B, H], zero past each row's end; the final Carry per layer).

  `weights`: `[cell.weights() for cell in model.layers]`. `kernel`: `rnn.lstm`, or a stand-in
  with its signature (`lstm_reference`). `resets` cannot run: cuDNN runs each row straight
  through, so a call with resets raises ValueError. A row of length 0 keeps its initial carry
  (the kernel runs it for one step, whose results are dropped). The backend is checked here,
  when the kernel is about to run: building such a model on a CPU (a sweep's check, loading a
  run to sample from it) is fine, and `model.step` never uses the kernel.
  """
  if kernel is rnn.lstm and (reason := _backend_refusal(jax.default_backend())):
    raise ValueError(reason)
  if resets is not None:
    raise ValueError("engine='cudnn' cannot restart a carry inside a sequence (resets): cuDNN "
                     "runs each row straight through; put episodes in separate rows, set "
                     "config.model.resets=False, or use engine='auto'")
  steps, batch, features = xs.shape
  n = lengths(mask, steps, batch)
  h0 = jnp.stack([s.h for s in state])                           # [L, B, H]
  c0 = jnp.stack([s.c for s in state])
  y, h_n, c_n = kernel(jnp.swapaxes(xs, 0, 1), h0, c0,
                       pack(weights, features, hidden_size), jnp.maximum(n, 1),
                       input_size=features, hidden_size=hidden_size,
                       num_layers=len(weights), dropout=0.0, bidirectional=False,
                       precision=precision)
  valid = jnp.arange(steps)[:, None] < n[None, :]                # [T, B]
  ys = jnp.where(valid[..., None], jnp.swapaxes(y, 0, 1), 0.0)
  ran = (n > 0)[None, :, None]
  h_n, c_n = jnp.where(ran, h_n, h0), jnp.where(ran, c_n, c0)
  return ys, tuple(Carry(h, c) for h, c in zip(h_n, c_n))


def lstm_reference(x: jax.Array, h_0: jax.Array, c_0: jax.Array, weights: jax.Array,
                   seq_lengths: jax.Array, *, input_size: int, hidden_size: int,
                   num_layers: int, dropout: float, bidirectional: bool,
                   precision: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`rnn.lstm`'s signature on `rnn.lstm_ref` (plain JAX, any backend, differentiable): unpacks
  the flat weights with `rnn.unpack_lstm_weights`, so it checks `pack` too. x [B, T, F],
  h_0, c_0 [L, B, H] -> (y [B, T, H], h_n, c_n [L, B, H]); `precision` is unused."""
  del precision
  unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                     bidirectional)
  return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                      num_layers, dropout, bidirectional)


def _backend_refusal(backend: str) -> str | None:
  if backend in _BACKENDS:
    return None
  return (f"engine='cudnn': cuDNN runs on NVIDIA GPUs only, and the backend is {backend!r}; "
          "on CPU use engine='auto'")


def refusal(spec: ModelSpec, backend: str | None) -> str | None:
  """Why engine='cudnn' cannot run `spec` on `backend` (None: the design only; one sentence
  naming the key and what would be valid), or None. The kernel is the plain tanh LSTM stack (any num_layers, h_0 and
  c_0 given, so learned_initial_state is fine) on an NVIDIA GPU. `transition` and
  `lecture_peephole` need cell='rnn' and lstm_variant='lecture', refused through those keys.
  `resets` is data: the refusal cannot see it, and `run_stack` raises on a call with resets.
  """
  if backend is not None and (reason := _backend_refusal(backend)):
    return reason
  rules = (
      ("cell", spec.cell != "lstm", "cuDNN's kernel is the LSTM", "'lstm'"),
      ("lstm_variant", spec.lstm_variant != "standard",
       "the kernel computes the standard LSTM step", "'standard'"),
      ("activation", spec.activation != "tanh", "the kernel's σ is tanh", "'tanh'"),
      ("proj_size", spec.proj_size > 0, "jax.experimental.rnn has no projection", "0"),
      ("norm", spec.norm != "none",
       "the kernel runs every layer with nothing inside or between the steps", "'none'"),
      ("horizontal_skip", spec.horizontal_skip != "none",
       "the kernel's step reads only x_t, h_{t-1} and c_{t-1}", "'none'"),
      ("vertical_skip", spec.vertical_skip != "none",
       "in the kernel each layer reads the output of the one below", "'none'"),
      ("dropout", spec.dropout > 0, "the kernel's dropout draws its own masks, not ours", "0"),
      ("recurrent_dropout", spec.recurrent_dropout > 0, "the kernel has no recurrent dropout",
       "0"),
      ("bidirectional", spec.bidirectional != "none",
       "the backward stack is not wired to the kernel", "'none'"),
      ("remat", spec.remat, "the kernel keeps its own reserve space for the backward", "False"),
      ("execution", spec.execution != "layer_major",
       "the kernel runs each layer over the whole sequence", "'layer_major'"),
      ("dtype", spec.dtype != "float32", "jax's cuDNN LSTM runs in float32 only", "'float32'"),
      ("param_dtype", spec.param_dtype != "float32", "jax's cuDNN LSTM runs in float32 only",
       "'float32'"),
  )
  for key, bad, why, fix in rules:
    if bad:
      return (f"engine='cudnn' cannot run {key}={getattr(spec, key)!r} ({why}); use "
              f"{key}={fix} or engine='auto'")
  return None
