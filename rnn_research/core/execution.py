"""How the stack runs over time: layer-major, time-major and one streaming step.

All three share `wire`, the stack's wiring of one layer into the next:

  u^(l)  = drop_inp(vertical-skip input of layer l)          (`vertical_skip.layer_input`)
  h^(l)  = the cell over u^(l)  (a whole sequence by `engine.run_layer`, or one step)
  h^(l) <- between-layer norm (sequence statistics, or the running ones for one step)
  up     = drop_out(h^(l))
and the readout reads `vertical_skip.top`. `layer_major` runs one scan per layer (the engine's
strategies apply); `time_major` scans over time with `step_layers`, every layer inside the
step, as streaming does, which is why the two give the same numbers.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core import dropout, vertical_skip
from rnn_research.core.carry import Carry
from rnn_research.core.cells import Cell
from rnn_research.core.engine import run_layer
from rnn_research.core.step import cell_step

State = tuple[Carry, ...]
Noise = list[dropout.LayerNoise]


def wire(stack: Any, x: jax.Array, run: Callable[[int, Cell, jax.Array], jax.Array],
         norm: Callable[[nnx.Module, jax.Array], jax.Array], noise: Noise) -> jax.Array:
  """The wiring of `stack` (a `RecurrentStack`) for a sequence [T, B, F] or one step [B, F]:
  `run(l, cell, u)` gives h^(l), `norm(module, h)` applies a between-layer norm; returns what
  the readout reads."""
  outs: list[jax.Array] = []
  for l, cell in enumerate(stack.layers):
    u = vertical_skip.layer_input(stack.vertical_skip, l, x, outs, stack.project)
    h = run(l, cell, dropout.drop(u, noise[l].inp))
    h = h if stack.between[l] is None else norm(stack.between[l], h)
    outs.append(dropout.drop(h, noise[l].out))
  return vertical_skip.top(stack.vertical_skip, x, outs, stack.project)


def layer_major(stack: Any, params: list, xs: jax.Array, mask: jax.Array | None, state: State,
                resets: jax.Array | None, inits: State, noise: Noise) -> tuple[jax.Array, State]:
  """One scan per layer: xs [T, B, F] -> (top [T, B, top], final state)."""
  finals = []

  def run(l, cell, u):
    h, carry, stats = run_layer(cell, params[l], u, mask, state[l], stack.how, resets=resets,
                                init=inits[l], rmask=noise[l].rec)
    if stats is not None:  # batch_per_step in training
      cell.step_norm.update(stats)
    finals.append(carry)
    return h

  top = wire(stack, xs, run, lambda norm, h: norm(h, mask), noise)
  return top, tuple(finals)


def step_layers(stack: Any, params: list, state: State, x: jax.Array, m: jax.Array | None,
                probe: jax.Array | None, r: jax.Array | None, inits: State, noise: Noise):
  """All layers at one time step: (new state, top [B, top], per-layer statistics); probe
  [L, B, H] is added to each layer's new h; r [B] resets to `inits`."""
  new, stats = [], []

  def run(l, cell, u):
    carry, h, st = cell_step(cell, params[l], state[l], u, m,
                             None if probe is None else probe[l], r=r, init=inits[l],
                             rmask=noise[l].rec)
    new.append(carry)
    stats.append(st)
    return h

  top = wire(stack, x, run, lambda norm, h: norm.step(h, m), noise)
  if stack.vertical_norm is not None:  # the carries, normalised across layers
    normed = stack.vertical_norm(jnp.stack([c.h for c in new]))
    keep = (lambda a, b: a) if m is None else (lambda a, b: jnp.where(m[:, None], a, b))
    new = [c._replace(h=keep(n, c.h)) for n, c in zip(normed, new)]
  return tuple(new), top, tuple(stats)


def time_major(stack: Any, params: list, xs: jax.Array, mask: jax.Array | None, state: State,
               probes: jax.Array | None, resets: jax.Array | None, inits: State,
               noise: Noise) -> tuple[jax.Array, State]:
  """One scan over time with every layer inside the step: xs [T, B, F] -> (top, final state);
  probes [T, L, B, H] or None."""
  def body(state, inputs):
    x, m, probe, r, out_noise = inputs
    step_noise = [nz._replace(out=o) for nz, o in zip(noise, out_noise)]
    state, top, stats = step_layers(stack, params, state, x, m, probe, r, inits, step_noise)
    return state, (top, stats)

  if stack.how.remat:
    body = jax.checkpoint(body)
  out_noise = tuple(nz.out for nz in noise)
  state, (hs, stats) = jax.lax.scan(body, state, (xs, mask, probes, resets, out_noise),
                                    unroll=stack.how.unroll)
  for cell, st in zip(stack.layers, stats):
    if st is not None:
      cell.step_norm.update(st)
  return hs, state
