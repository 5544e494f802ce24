"""Dropout of the stacked model: training mode only (eval and streaming never drop).

  `dropout` p:           h^(l) <- h^(l) ⊙ m_t / (1 - p), a fresh m_t per step, l < L - 1
                         (Zaremba et al. 2014)
  `recurrent_dropout` q: h_{t-1} ⊙ d / (1 - q) enters W_h, d [B, H] drawn once per sequence
                         (Gal & Ghahramani 2016)
  `recurrent_dropout_inputs`: layer l's input ⊙ d_x / (1 - q), d_x drawn once per sequence
The masks are drawn before the scan, the same way for layer- and time-major execution, so both
give the same numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax


@dataclasses.dataclass(frozen=True)
class DropoutRates:
  """Attributes: out (`dropout`), rec (`recurrent_dropout`), inp (the input rate: q with
  `recurrent_dropout_inputs`, else 0)."""

  out: float = 0.0
  rec: float = 0.0
  inp: float = 0.0

  def any(self) -> bool:
    return bool(self.out or self.rec or self.inp)


class LayerNoise(NamedTuple):
  """One layer's scaled masks, None where that dropout is off: inp [B, F_l], rec [B, H],
  out [T, B, H] (one step's [B, H] inside the time-major scan)."""

  inp: jax.Array | None = None
  rec: jax.Array | None = None
  out: jax.Array | None = None


def draw(key: jax.Array | None, rates: DropoutRates, widths: list[tuple[int, int]], steps: int,
         batch: int, dtype: Any) -> list[LayerNoise]:
  """Per layer l of (in_features F_l, hidden_size H) in `widths`, its masks (no key: none);
  the top layer's output is never dropped."""
  noise = []
  for l, (width_in, size) in enumerate(widths):
    if key is None:
      noise.append(LayerNoise())
      continue
    keys = jax.random.split(jax.random.fold_in(key, l), 3)
    shapes = {"inp": (batch, width_in), "rec": (batch, size), "out": (steps, batch, size)}
    noise.append(LayerNoise(**{
        name: bernoulli_mask(keys[i], getattr(rates, name), shape, dtype)
        if getattr(rates, name) and (name != "out" or l < len(widths) - 1) else None
        for i, (name, shape) in enumerate(shapes.items())}))
  return noise


def bernoulli_mask(key: jax.Array, rate: float, shape: tuple[int, ...], dtype: Any) -> jax.Array:
  """1 / (1 - rate) with probability 1 - rate, else 0 (inverted dropout)."""
  return jax.random.bernoulli(key, 1.0 - rate, shape).astype(dtype) / (1.0 - rate)


def drop(h: jax.Array, mask: jax.Array | None) -> jax.Array:
  return h if mask is None else h * mask
