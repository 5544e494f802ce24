"""The stacked recurrent model (composed RNN, Fig 13.4) and `build`, its one constructor.

  model = build(config.model, in_features=F, out_features=O, rngs=nnx.Rngs(0))
  ys = model(xs, mask)                    xs [B, T, F], mask [B, T] bool -> ys [B, T, O]
  state = model.initial_state(B)
  state, y_t = model.step(state, x_t)     x_t [B, F] -> y_t [B, O]; equals ys[:, t]

Layer l's output sequence is layer l+1's input; the readout maps the top layer's h_t to y_t.
Past a sequence's end (mask false) every carry is frozen and y_t = 0.
Execution `layer_major` runs one scan per layer (the engine's strategies apply);
`time_major` runs one scan over time with every layer inside the step, as streaming does.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.activations import ACTIVATIONS
from rnn_research import norms
from rnn_research.cells import CELLS, LSTM_VARIANTS, Carry
from rnn_research.cells.base import HORIZONTAL_SKIPS
from rnn_research.cells.rnn import TRANSITIONS
from rnn_research.engine import run_layer, strategy
from rnn_research.model_config import resolve
from rnn_research.initializers import RECURRENT_INITS
from rnn_research.readout import READOUTS, Readout
from rnn_research.step import cell_step

State = tuple[Carry, ...]
EXECUTIONS = ("layer_major", "time_major")
VERTICAL_SKIPS = ("none", "residual", "dense")


class RecurrentStack(nnx.Module):
  """`num_layers` cells of width `hidden_size`, the design axes between and inside them, and an
  optional per-step readout.

  Vertical skips (Fig 13.12), with h^(-1) = x W_p (W_p learned when F != H, else identity):
    `residual`: layer l+1 and the readout (as "layer L") receive h^(l) + h^(l-1);
    `dense`:    layer l >= 1 receives [x, h^(l-1)]; the readout receives [h^(0), ..., h^(L-1)].
  Between-layer norms act on h^(l) before it goes up; `mini_vertical` and horizontal skips act
  inside the step (`Cell.step_pointwise`); `vertical` norm acts on all layers' carries at one
  step, so a model with it runs time-major.
  """

  def __init__(self, cfg: Any, in_features: int, out_features: int | None, rngs: nnx.Rngs):
    if cfg.execution not in EXECUTIONS:
      raise ValueError(f"unknown execution {cfg.execution!r}; valid choices: "
                       f"{', '.join(EXECUTIONS)}")
    cell_cls = CELLS.get(cfg.cell)
    _check_choices(cfg)
    if cfg.transition != "linear" and cfg.cell != "rnn":
      raise ValueError(f"transition={cfg.transition!r} is defined for cell='rnn' only "
                       f"(got cell={cfg.cell!r}); use transition='linear'")
    if not isinstance(in_features, int) or isinstance(in_features, bool) or in_features < 1:
      raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
    if out_features is not None and (not isinstance(out_features, int) or
                                     isinstance(out_features, bool) or out_features < 1):
      raise ValueError(f"out_features must be a positive integer or None, got {out_features!r}")
    size, depth = cfg.hidden_size, cfg.num_layers
    normed = norms.norm_layers(cfg.norm_layers, depth)
    normed = () if cfg.norm == "none" else normed
    if cfg.norm == "vertical" and len(normed) != depth:
      raise ValueError("norm='vertical' normalises across all layers; use norm_layers='all'")
    self.in_features = in_features
    self.how = strategy(cfg.engine, cfg.remat)
    self.vertical_skip = cfg.vertical_skip
    widths = [in_features] + [size + (in_features if cfg.vertical_skip == "dense" else 0)
                              ] * (depth - 1)
    self.layers = nnx.List([
        cell_cls(w, cfg, rngs, carry_norm=cfg.norm == "mini_vertical" and l in normed)
        for l, w in enumerate(widths)])
    self.between = nnx.List([
        norms.between_layers(cfg, size) if cfg.norm in norms.BETWEEN_LAYERS and l in normed
        else None for l in range(depth)])
    self.vertical_norm = (norms.VerticalNorm(depth, size, cfg.norm_eps)
                          if cfg.norm == "vertical" else None)
    self.time_major = cfg.execution == "time_major" or self.vertical_norm is not None
    self.project = (nnx.Linear(in_features, size, use_bias=False, rngs=rngs)
                    if cfg.vertical_skip == "residual" and in_features != size else None)
    top = size * depth if cfg.vertical_skip == "dense" else size
    self.readout = None if out_features is None else Readout(
        cfg.readout, top, out_features, cfg.readout_hidden, self.layers[0].activation, rngs)

  def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> State:
    """Zero carries of every layer (h_0 = 0, eq. 13.1)."""
    return tuple(cell.initial_carry(batch_size, dtype) for cell in self.layers)

  def __call__(self, xs: jax.Array, mask: jax.Array | None = None, *,
               state: State | None = None, return_state: bool = False,
               probes: jax.Array | None = None):
    """xs [B, T, F], mask [B, T] bool -> ys [B, T, O] (and the final state if asked).

    `probes` [L, B, T, H], if given, is added to every layer's h_t where it leaves the step
    (to the next step and to the next layer); with zeros the gradient w.r.t. `probes` is
    dL/dh_t^(l), the lecture's gradient-flow measurement (section 2). It runs time-major.
    """
    xs = jnp.asarray(xs)
    if xs.ndim != 3 or xs.shape[-1] != self.in_features:
      raise ValueError(f"inputs must be [batch, time, {self.in_features}], got shape "
                       f"{tuple(xs.shape)}")
    if mask is not None:
      mask = jnp.asarray(mask)
      if mask.shape != xs.shape[:2]:
        raise ValueError(f"mask must be [batch, time] = {tuple(xs.shape[:2])}, got shape "
                         f"{tuple(mask.shape)}")
      mask = mask.astype(bool).T
    if state is None:
      state = self.initial_state(xs.shape[0], jnp.result_type(xs.dtype, jnp.float32))
    xs = jnp.swapaxes(xs, 0, 1)
    params = [cell.weights() for cell in self.layers]
    if probes is not None:
      expected = (len(self.layers), xs.shape[1], xs.shape[0], self.layers[-1].hidden_size)
      if tuple(probes.shape) != expected:
        raise ValueError(f"probes must be [layers, batch, time, hidden] = {expected}, got "
                         f"{tuple(probes.shape)}")
      probes = jnp.moveaxis(probes, 2, 0)
    if self.time_major or probes is not None:
      self._check_per_step("time-major execution (and gradient-flow probes)")
      hs, state = self._time_major(params, xs, mask, state, probes)
    else:
      outs, finals = [], []
      for l, (cell, p, carry) in enumerate(zip(self.layers, params, state)):
        h, carry = run_layer(cell, p, self._layer_input(l, xs, outs), mask, carry, self.how)
        outs.append(h if self.between[l] is None else self.between[l](h, mask))
        finals.append(carry)
      hs, state = self._top(xs, outs), tuple(finals)
    ys = self._read(jnp.swapaxes(hs, 0, 1), None if mask is None else mask.T)
    return (ys, state) if return_state else ys

  def step(self, state: State, x_t: jax.Array,
           mask_t: jax.Array | None = None) -> tuple[State, jax.Array]:
    """One streaming step: x_t [B, F] (mask_t [B]) -> (new state, y_t [B, O]).

    Between-layer `layer` and `batch` norms use their running statistics: the future is unknown.
    """
    x_t = jnp.asarray(x_t)
    if x_t.ndim != 2 or x_t.shape[-1] != self.in_features:
      raise ValueError(f"step input must be [batch, {self.in_features}], got shape "
                       f"{tuple(x_t.shape)}")
    if mask_t is not None:
      mask_t = jnp.asarray(mask_t)
      if mask_t.shape != x_t.shape[:1]:
        raise ValueError(f"step mask must be [batch] = {tuple(x_t.shape[:1])}, got shape "
                         f"{tuple(mask_t.shape)}")
      mask_t = mask_t.astype(bool)
    params = [cell.weights() for cell in self.layers]
    state, h = self._step_layers(params, state, x_t, mask_t)
    return state, self._read(h, mask_t)

  def per_step_ok(self) -> bool:
    """Whether the model can run step by step in its current mode (streaming, time-major,
    gradient-flow probes): not while a norm uses whole-sequence statistics."""
    return all(norm is None or norm.per_step_ok() for norm in self.between)

  def _check_per_step(self, what: str) -> None:
    """Sequence-statistics norms in training have no per-step form."""
    for norm in self.between:
      if norm is not None and not norm.per_step_ok():
        raise ValueError(f"{what} applies norms step by step, but this model's "
                         f"{type(norm).__name__} uses whole-sequence statistics (training "
                         "mode, or eval_norm_stats='sequence'): call model.eval() with "
                         "running statistics first, or use execution='layer_major'")

  def _layer_input(self, l: int, x: jax.Array, outs: list[jax.Array]) -> jax.Array:
    """What layer l reads (sequence [T, B, .] or one step [B, .])."""
    if l == 0:
      return x
    if self.vertical_skip == "dense":
      return jnp.concatenate([x, outs[l - 1]], axis=-1)
    if self.vertical_skip == "residual":
      return outs[l - 1] + self._below(l - 1, x, outs)
    return outs[l - 1]

  def _below(self, l: int, x: jax.Array, outs: list[jax.Array]) -> jax.Array:
    """h^(l-1), with h^(-1) = x W_p: the residual partner of h^(l)."""
    if l > 0:
      return outs[l - 1]
    return x if self.project is None else self.project(x)

  def _top(self, x: jax.Array, outs: list[jax.Array]) -> jax.Array:
    """What the readout reads."""
    if self.vertical_skip == "dense":
      return jnp.concatenate(outs, axis=-1)
    if self.vertical_skip == "residual":
      return outs[-1] + self._below(len(outs) - 1, x, outs)
    return outs[-1]

  def _step_layers(self, params, state: State, x: jax.Array, m: jax.Array | None,
                   probe: jax.Array | None = None):
    """All layers at one time step; probe [L, B, H] is added to each layer's new h."""
    new, outs = [], []
    for l, (cell, p, carry) in enumerate(zip(self.layers, params, state)):
      carry, h = cell_step(cell, p, carry, self._layer_input(l, x, outs), m,
                           None if probe is None else probe[l])
      new.append(carry)
      outs.append(h if self.between[l] is None else self.between[l].step(h, m))
    if self.vertical_norm is not None:
      normed = self.vertical_norm(jnp.stack([c[0] for c in new]))
      keep = (lambda a, b: a) if m is None else (lambda a, b: jnp.where(m[:, None], a, b))
      new = [(keep(n, c[0]),) + c[1:] for n, c in zip(normed, new)]
    return tuple(new), self._top(x, outs)

  def _time_major(self, params, xs: jax.Array, mask: jax.Array | None, state: State,
                  probes: jax.Array | None = None):
    def body(state, inputs):
      return self._step_layers(params, state, *inputs)

    if self.how.remat:
      body = jax.checkpoint(body)
    state, hs = jax.lax.scan(body, state, (xs, mask, probes))
    return hs, state

  def _read(self, h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Readout of h [..., H]; zero where mask [...] is False."""
    y = h if self.readout is None else self.readout(h)
    return y if mask is None else jnp.where(mask[..., None], y, jnp.zeros_like(y))


def _check_choices(cfg: Any) -> None:
  """Every named choice is valid, also those the chosen cell does not read (typos fail)."""
  for registry, value in ((ACTIVATIONS, cfg.activation), (RECURRENT_INITS, cfg.recurrent_init),
                          (LSTM_VARIANTS, cfg.lstm_variant)):
    registry.get(value)
  for key, valid in (("transition", TRANSITIONS), ("readout", READOUTS), ("norm", norms.NORMS),
                     ("vertical_skip", VERTICAL_SKIPS), ("horizontal_skip", HORIZONTAL_SKIPS),
                     ("eval_norm_stats", norms.EVAL_NORM_STATS)):
    if cfg[key] not in valid:
      raise ValueError(f"unknown {key} {cfg[key]!r}; valid choices: {', '.join(valid)}")


def build(config: Mapping[str, Any], in_features: int, out_features: int | None,
          rngs: nnx.Rngs) -> RecurrentStack:
  """The model of `config.model` (see `model_config.model_defaults` for every key).

  `out_features=None` gives no readout: the call returns the top layer's h [B, T, H].
  """
  return RecurrentStack(resolve(config), in_features, out_features, rngs)
