"""The engine: runs any cell over time in `jax.lax.scan`, with an execution strategy.

Every strategy computes the step of `rnn_research.core.step`; they differ only in where the
matmuls run and how the backward pass is formed.

Strategies (`config.model.engine`):
  scan          both matmuls inside the scan, plain autodiff.
  scan_hoisted  zx for all steps as one GEMM before the scan, plain autodiff.
  vjp           as `scan` forward; a custom VJP whose reverse scan carries only d(carry) and
                writes dz_t, then dW_h, dW_x, db, dX are single einsums over all steps.
  vjp_hoisted   as `vjp` with the hoisted forward projection.
  auto          per backend, by measurement (docs/speed.md): `vjp` on CPU;
                `vjp_hoisted` on GPU/TPU, where the hoisted GEMM is the classic win (cuDNN).
  cudnn         the standard LSTM stack in one cuDNN kernel (`jax.experimental.rnn.lstm`,
                NVIDIA GPUs only; `core/cudnn.py`; refused with the reason elsewhere).
  associative   min_gru / min_lstm / lru only: `jax.lax.associative_scan` (depth O(log T)).
Cells without W_h (min_gru, min_lstm, lru) are linear recurrences, run by `parallel_scan`: by
associative scan under `associative` (and `auto` on GPU/TPU), else by a sequential scan of the
same elementwise recurrence (`auto` on CPU, where it measured faster: docs/speed.md).
`remat` recomputes the step in the backward pass (autodiff: `jax.checkpoint` on the step; vjp:
only the carries are stored and z_t is recomputed in the reverse scan).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from rnn_research.core import choices, parallel_scan
from rnn_research.core.carry import Carry
from rnn_research.core.cells.base import Cell
from rnn_research.core.step import StepStats, project, recur
from rnn_research.core.vjp import scan_custom_vjp

_AUTO = {"cpu": "vjp"}
_AUTO_ACCELERATOR = "vjp_hoisted"
CHUNK_BYTES = 3 << 19  # 1.5 MiB of dz per chunk: the fastest size measured on XLA:CPU


@dataclasses.dataclass(frozen=True)
class Strategy:
  """Attributes:
    hoist: compute x W_x + b for all steps as one GEMM before the scan.
    custom_vjp: use the custom backward of `rnn_research.core.vjp`.
    remat: recompute instead of store for the backward pass.
    associative: run linear-recurrence cells (no W_h) by associative scan.
    chunk_steps: custom VJP only: steps per chunk of the reverse scan (see `vjp`); 0 sizes the
      chunk by `chunk_bytes`, and with `chunk_bytes` None one chunk is the whole sequence.
    chunk_bytes: the bytes of float32 dz [K, B, G*H] a chunk should hold.
    unroll: steps per iteration of every sequential scan (`jax.lax.scan`'s unroll).
    cudnn: run the whole stack in one cuDNN kernel (`core/cudnn.py`); layer-major only.
  """

  hoist: bool = False
  custom_vjp: bool = False
  remat: bool = False
  associative: bool = False
  chunk_steps: int = 0
  chunk_bytes: int | None = None
  unroll: int = 1
  cudnn: bool = False


def strategy(engine: choices.Engine, remat: bool = False, backend: str | None = None,
             backward_chunk: int = 0, unroll: int = 1) -> Strategy:
  """The `Strategy` for `config.model.engine` on `backend` (default: JAX's default backend).

  backward_chunk: steps per chunk of the custom VJP's reverse scan; 0 = auto: on CPU the chunk
  whose dz is about CHUNK_BYTES (cache-resident, measured fastest), on GPU/TPU the whole sequence.
  """
  choices.check("engine", engine, choices.Engine)
  accelerator = (backend or jax.default_backend()) not in _AUTO
  associative = engine == "associative" or (engine == "auto" and accelerator)
  if engine == "auto":
    engine = _AUTO.get(backend or jax.default_backend(), _AUTO_ACCELERATOR)
  return Strategy(hoist=engine.endswith("hoisted"), custom_vjp=engine.startswith("vjp"),
                  remat=bool(remat), associative=associative, chunk_steps=backward_chunk,
                  chunk_bytes=None if accelerator else CHUNK_BYTES, unroll=unroll,
                  cudnn=engine == "cudnn")


def run_layer(cell: Cell, p: dict[str, Any], xs: jax.Array, mask: jax.Array | None,
              carry0: Carry, how: Strategy, *, resets: jax.Array | None = None,
              init: Carry | None = None,
              rmask: jax.Array | None = None) -> tuple[jax.Array, Carry, StepStats]:
  """One layer over a sequence, time-major: xs [T, B, F], mask [T, B] or None.

  resets [T, B] (or None): the carry entering step t is `init` (zeros if None) where set.
  rmask [B, H] (or None): the recurrent-dropout mask on h_{t-1} (see `step`).
  Returns ys [T, B, H], the final carry, and batch_per_step's per-step statistics [T, ...]
  in training (else None).
  """
  if not cell.recurrent:  # min_gru, min_lstm, lru: no W_h, so rmask has nothing to act on
    ys, carry = parallel_scan.run(cell, p, xs, mask, carry0, resets=resets, init=init,
                                  remat=how.remat, associative=how.associative,
                                  unroll=how.unroll)
    return ys, carry, None
  if how.custom_vjp:
    return (*scan_custom_vjp(cell, p, xs, mask, carry0, how, resets, init, rmask), None)

  def body(carry, inputs):
    u, m, r = inputs
    carry, y, stats = recur(cell, p, carry, u if how.hoist else project(p, u), m, r=r,
                            init=init, rmask=rmask)
    return carry, (y, stats)

  if how.remat:
    body = jax.checkpoint(body)
  inputs = project(p, xs) if how.hoist else xs
  carry, (ys, stats) = jax.lax.scan(body, carry0, (inputs, mask, resets), unroll=how.unroll)
  return ys, carry, stats
