"""The stacked recurrent model (composed RNN, Fig 13.4) and `build`, its one constructor.

  model = build(config.model, in_features=F, out_features=O, rngs=nnx.Rngs(0))
  ys = model(xs, mask)                    xs [B, T, F], mask [B, T] bool -> ys [B, T, O]
  ys = model(xs, mask, resets=r, key=k)   r [B, T] bool: episode starts; k: dropout's PRNG key
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
import ml_collections
from flax import nnx

from rnn_research.core.activations import ACTIVATIONS
from rnn_research.core import norms
from rnn_research.core.cells import CELLS, LSTM_VARIANTS, Carry
from rnn_research.core.cells.base import HORIZONTAL_SKIPS
from rnn_research.core.cells.rnn import TRANSITIONS
from rnn_research.core.engine import run_layer, strategy
from rnn_research.core.model_config import resolve
from rnn_research.core.initializers import RECURRENT_INITS
from rnn_research.core.readout import READOUTS, Readout
from rnn_research.core.step import cell_step

State = tuple[Carry, ...]
EXECUTIONS = ("layer_major", "time_major")
VERTICAL_SKIPS = ("none", "residual", "dense")
BIDIRECTIONAL = ("none", "concat", "sum")


class RecurrentStack(nnx.Module):
  """`num_layers` cells of width `hidden_size`, the design axes between and inside them, and an
  optional per-step readout.

  Vertical skips (Fig 13.12), with h^(-1) = x W_p (W_p learned when F != H, else identity):
    `residual`: layer l+1 and the readout (as "layer L") receive h^(l) + h^(l-1);
    `dense`:    layer l >= 1 receives [x, h^(l-1)]; the readout receives [h^(0), ..., h^(L-1)].
  Between-layer norms act on h^(l) before it goes up; `mini_vertical` and horizontal skips act
  inside the step (`Cell.step_pointwise`); `vertical` norm acts on all layers' carries at one
  step, so a model with it runs time-major.
  Dropout (training mode only; `model.eval()` switches it off; streaming never drops):
    `dropout` p:           h^(l) <- h^(l) ⊙ m_t / (1 - p), a fresh m_t per step, l < L - 1;
    `recurrent_dropout` q: h_{t-1} ⊙ d / (1 - q) enters W_h, d [B, H] drawn once per sequence;
    `recurrent_dropout_inputs`: layer l's input ⊙ d_x / (1 - q), d_x drawn once per sequence.
  `resets` [B, T] restart every layer's carry from its initial state (zeros or learned) at
  the steps where they are set, so packed episodes never see each other.
  `bidirectional`: a second stack of the same design reads each sequence's valid part from its
  end (padding stays in place); its top output, re-aligned in time, is concatenated with or
  added to the forward stack's before the readout.
  """

  def __init__(self, cfg: Any, in_features: int, out_features: int | None, rngs: nnx.Rngs):
    if cfg.execution not in EXECUTIONS:
      raise ValueError(f"unknown execution {cfg.execution!r}; valid choices: "
                       f"{', '.join(EXECUTIONS)}")
    if cfg.bidirectional not in BIDIRECTIONAL:
      raise ValueError(f"unknown bidirectional {cfg.bidirectional!r}; valid choices: "
                       f"{', '.join(BIDIRECTIONAL)}")
    cell_cls = CELLS.get(cfg.cell)
    _check_choices(cfg)
    if cfg.engine == "associative" and cell_cls.recurrent:
      raise ValueError(f"engine='associative' runs linear-recurrence cells only (min_gru, "
                       f"min_lstm); cell={cfg.cell!r} has W_h: use engine='auto'")
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
    self.how = strategy(_engine(cfg), cfg.remat, backward_chunk=cfg.backward_chunk)
    self.vertical_skip = cfg.vertical_skip
    widths = [in_features] + [size + (in_features if cfg.vertical_skip == "dense" else 0)
                              ] * (depth - 1)
    self.layers = nnx.List([
        cell_cls(w, cfg, rngs, carry_norm=cfg.norm == "mini_vertical" and l in normed)
        for l, w in enumerate(widths)])
    for l in normed if cfg.norm == "batch_per_step" else ():
      self.layers[l].attach_step_norm(cfg)
    self.between = nnx.List([
        norms.between_layers(cfg, size) if cfg.norm in norms.BETWEEN_LAYERS and l in normed
        else None for l in range(depth)])
    self.vertical_norm = (norms.VerticalNorm(depth, size, cfg.norm_eps)
                          if cfg.norm == "vertical" else None)
    self.time_major = cfg.execution == "time_major" or self.vertical_norm is not None
    self.project = (nnx.Linear(in_features, size, use_bias=False, rngs=rngs)
                    if cfg.vertical_skip == "residual" and in_features != size else None)
    self.deterministic = False  # nnx's `eval()` sets it: no dropout
    self.rates = {"out": cfg.dropout, "rec": cfg.recurrent_dropout,
                  "inp": cfg.recurrent_dropout if cfg.recurrent_dropout_inputs else 0.0}
    self.use_resets = cfg.resets
    self.merge = cfg.bidirectional
    self.reverse_stack = None if cfg.bidirectional == "none" else RecurrentStack(
        ml_collections.FrozenConfigDict({**cfg.to_dict(), "bidirectional": "none"}),
        in_features, None, rngs)
    top = size * depth if cfg.vertical_skip == "dense" else size
    top *= 2 if cfg.bidirectional == "concat" else 1
    self.readout = None if out_features is None else Readout(
        cfg.readout, top, out_features, cfg.readout_hidden, self.layers[0].activation, rngs)

  def initial_state(self, batch_size: int, dtype: Any = jnp.float32) -> State:
    """Every layer's initial carry: zeros (h_0 = 0, eq. 13.1) or the learned (h_0, c_0, ...)."""
    return tuple(cell.initial_carry(batch_size, dtype) for cell in self.layers)

  def __call__(self, xs: jax.Array, mask: jax.Array | None = None, *,
               state: State | None = None, return_state: bool = False,
               probes: jax.Array | None = None, resets: jax.Array | None = None,
               key: jax.Array | None = None):
    """xs [B, T, F], mask [B, T] bool -> ys [B, T, O] (and the final state if asked).

    `resets` [B, T] bool: the carries entering step t restart from the initial state where set
    (ignored at padding, and with `config.model.resets=False`). `key`: the PRNG key of dropout,
    needed in training mode when a dropout rate is > 0.
    `probes` [L, B, T, H], if given, is added to every layer's h_t where it leaves the step
    (to the next step and to the next layer); with zeros the gradient w.r.t. `probes` is
    dL/dh_t^(l), the lecture's gradient-flow measurement (section 2). It runs time-major
    (a bidirectional model's probes reach its forward stack).
    """
    xs = jnp.asarray(xs)
    if xs.ndim != 3 or xs.shape[-1] != self.in_features:
      raise ValueError(f"inputs must be [batch, time, {self.in_features}], got shape "
                       f"{tuple(xs.shape)}")
    mask = _steps("mask", mask, xs.shape[:2])
    resets = _steps("resets", resets, xs.shape[:2], mask) if self.use_resets else None
    if self.reverse_stack is not None and (state is not None or return_state):
      raise ValueError("a bidirectional model carries no state from one call to the next: its "
                       "backward stack reads each whole sequence from its end")
    key = self._dropout_key(key)
    xs = jnp.swapaxes(xs, 0, 1)
    hs, state = self._hidden(xs, mask, state, probes, resets, key)
    if self.reverse_stack is not None:
      order = _reversal(mask, *xs.shape[:2])
      back = None if key is None else jax.random.fold_in(key, len(self.layers))
      hb, _ = self.reverse_stack._hidden(_gather(xs, order), mask, None, None,
                                         _reversed_resets(resets, mask, order), back)
      hb = _gather(hb, order)
      hs = jnp.concatenate([hs, hb], axis=-1) if self.merge == "concat" else hs + hb
    ys = self._read(jnp.swapaxes(hs, 0, 1), None if mask is None else mask.T)
    return (ys, state) if return_state else ys

  def _hidden(self, xs: jax.Array, mask: jax.Array | None, state: State | None,
              probes: jax.Array | None, resets: jax.Array | None, key: jax.Array | None):
    """Time-major xs [T, B, F] -> (top hidden sequence [T, B, top], final state)."""
    batch, dtype = xs.shape[1], jnp.result_type(xs.dtype, jnp.float32)
    if state is None:
      state = self.initial_state(batch, dtype)
    inits = self.initial_state(batch, dtype) if resets is not None else (None,) * len(state)
    noise = self._noise(key, *xs.shape[:2], dtype)
    params = [cell.weights() for cell in self.layers]
    if probes is not None:
      expected = (len(self.layers), xs.shape[1], xs.shape[0], self.layers[-1].hidden_size)
      if tuple(probes.shape) != expected:
        raise ValueError(f"probes must be [layers, batch, time, hidden] = {expected}, got "
                         f"{tuple(probes.shape)}")
      probes = jnp.moveaxis(probes, 2, 0)
    if self.time_major or probes is not None:
      self._check_per_step("time-major execution (and gradient-flow probes)")
      return self._time_major(params, xs, mask, state, probes, resets, inits, noise)
    outs, finals = [], []
    for l, (cell, p, carry) in enumerate(zip(self.layers, params, state)):
      u = _drop(self._layer_input(l, xs, outs), noise[l]["inp"])
      h, carry = run_layer(cell, p, u, mask, carry, self.how, resets=resets, init=inits[l],
                           rmask=noise[l]["rec"])
      if isinstance(h, tuple):  # batch_per_step in training: (h, per-step statistics)
        h, stats = h
        cell.step_norm.update(stats)
      h = h if self.between[l] is None else self.between[l](h, mask)
      outs.append(_drop(h, noise[l]["out"]))
      finals.append(carry)
    return self._top(xs, outs), tuple(finals)

  def step(self, state: State, x_t: jax.Array, mask_t: jax.Array | None = None,
           reset_t: jax.Array | None = None) -> tuple[State, jax.Array]:
    """One streaming step: x_t [B, F] (mask_t, reset_t [B]) -> (new state, y_t [B, O]).

    Between-layer `layer` and `batch` norms use their running statistics: the future is unknown.
    Dropout is never applied.
    """
    if self.reverse_stack is not None:
      raise ValueError("a bidirectional model cannot stream: its backward stack needs each "
                       "sequence's future; use bidirectional='none' for streaming and "
                       "generation")
    x_t = jnp.asarray(x_t)
    if x_t.ndim != 2 or x_t.shape[-1] != self.in_features:
      raise ValueError(f"step input must be [batch, {self.in_features}], got shape "
                       f"{tuple(x_t.shape)}")
    mask_t = _steps("step mask", mask_t, x_t.shape[:1])
    reset_t = _steps("step reset", reset_t, x_t.shape[:1], mask_t) if self.use_resets else None
    inits = (None,) * len(state) if reset_t is None else self.initial_state(
        x_t.shape[0], jnp.result_type(x_t.dtype, jnp.float32))
    params = [cell.weights() for cell in self.layers]
    state, h, _ = self._step_layers(params, state, x_t, mask_t, None, reset_t, inits)
    return state, self._read(h, mask_t)

  def _dropout_key(self, key: jax.Array | None) -> jax.Array | None:
    """The key dropout draws from, or None when no dropout applies (eval mode, rates 0)."""
    if self.deterministic or not any(self.rates.values()):
      return None
    if key is None:
      raise ValueError("config.model.dropout/recurrent_dropout > 0: a training-mode call needs "
                       "key=<PRNG key> (the trainer passes one per step); call model.eval() "
                       "for the deterministic model")
    return key

  def _noise(self, key: jax.Array | None, steps: int, batch: int,
             dtype: Any) -> list[dict[str, jax.Array | None]]:
    """Per layer, the scaled dropout masks {inp [B, F_l], rec [B, H], out [T, B, H]} (None
    where that dropout is off); drawn the same way for layer- and time-major execution."""
    noise = []
    for l, cell in enumerate(self.layers):
      keys = jax.random.split(jax.random.fold_in(key, l), 3) if key is not None else None
      shapes = {"inp": (batch, cell.in_features), "rec": (batch, cell.hidden_size),
                "out": (steps, batch, cell.hidden_size)}
      noise.append({
          name: _bernoulli_mask(keys[i], self.rates[name], shapes[name], dtype)
          if keys is not None and self.rates[name] and (name != "out" or l < len(self.layers) - 1)
          else None for i, name in enumerate(shapes)})
    return noise

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
                   probe: jax.Array | None = None, r: jax.Array | None = None,
                   inits: State | None = None, noise: list[dict] | None = None):
    """All layers at one time step; probe [L, B, H] is added to each layer's new h; r [B]
    resets to `inits`; `noise` holds this step's dropout masks."""
    new, outs, stats = [], [], []
    for l, (cell, p, carry) in enumerate(zip(self.layers, params, state)):
      nz = noise[l] if noise else {"inp": None, "rec": None, "out": None}
      carry, h = cell_step(cell, p, carry, _drop(self._layer_input(l, x, outs), nz["inp"]), m,
                           None if probe is None else probe[l], r=r,
                           init=None if inits is None else inits[l], rmask=nz["rec"])
      h, st = h if isinstance(h, tuple) else (h, None)  # batch_per_step's statistics
      stats.append(st)
      new.append(carry)
      h = h if self.between[l] is None else self.between[l].step(h, m)
      outs.append(_drop(h, nz["out"]))
    if self.vertical_norm is not None:
      normed = self.vertical_norm(jnp.stack([c[0] for c in new]))
      keep = (lambda a, b: a) if m is None else (lambda a, b: jnp.where(m[:, None], a, b))
      new = [(keep(n, c[0]),) + c[1:] for n, c in zip(normed, new)]
    return tuple(new), self._top(x, outs), tuple(stats)

  def _time_major(self, params, xs: jax.Array, mask: jax.Array | None, state: State,
                  probes: jax.Array | None, resets: jax.Array | None, inits: State,
                  noise: list[dict]):
    def body(state, inputs):
      x, m, probe, r, out_noise = inputs
      step_noise = [{**nz, "out": o} for nz, o in zip(noise, out_noise)]
      state, top, stats = self._step_layers(params, state, x, m, probe, r, inits, step_noise)
      return state, (top, stats)

    if self.how.remat:
      body = jax.checkpoint(body)
    out_noise = tuple(nz["out"] for nz in noise)
    state, (hs, stats) = jax.lax.scan(body, state, (xs, mask, probes, resets, out_noise))
    for cell, st in zip(self.layers, stats):
      if st is not None:
        cell.step_norm.update(st)
    return hs, state

  def _read(self, h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Readout of h [..., H]; zero where mask [...] is False."""
    y = h if self.readout is None else self.readout(h)
    return y if mask is None else jnp.where(mask[..., None], y, jnp.zeros_like(y))


def _steps(name: str, flags: jax.Array | None, shape: tuple[int, ...],
           within: jax.Array | None = None) -> jax.Array | None:
  """A [B, T] (or [B]) bool input checked against `shape`, time-major ([T, B]) if 2-D, and
  False wherever the (already converted) mask `within` is False."""
  if flags is None:
    return None
  flags = jnp.asarray(flags)
  if flags.shape != tuple(shape):
    dims = "[batch, time]" if len(shape) == 2 else "[batch]"
    raise ValueError(f"{name} must be {dims} = {tuple(shape)}, got shape {tuple(flags.shape)}")
  flags = flags.astype(bool)
  flags = flags.T if flags.ndim == 2 else flags
  return flags if within is None else flags & within


def _bernoulli_mask(key: jax.Array, rate: float, shape: tuple[int, ...], dtype: Any) -> jax.Array:
  """1 / (1 - rate) with probability 1 - rate, else 0 (inverted dropout)."""
  return jax.random.bernoulli(key, 1.0 - rate, shape).astype(dtype) / (1.0 - rate)


def _drop(h: jax.Array, noise: jax.Array | None) -> jax.Array:
  return h if noise is None else h * noise


def _reversal(mask: jax.Array | None, steps: int, batch: int) -> jax.Array:
  """[T, B] time indices that reverse each row's valid positions and keep padding in place:
  the j-th of a row's n valid steps swaps with its (n-1-j)-th. An involution."""
  t = jnp.broadcast_to(jnp.arange(steps)[:, None], (steps, batch))
  if mask is None:
    return steps - 1 - t
  pos = jnp.argsort(jnp.where(mask, t, steps + t), axis=0)  # valid positions first, in order
  rank = jnp.cumsum(mask, axis=0) - 1
  mirror = jnp.clip(mask.sum(axis=0) - 1 - rank, 0, steps - 1)
  return jnp.where(mask, jnp.take_along_axis(pos, mirror, axis=0), t)


def _gather(seq: jax.Array, order: jax.Array) -> jax.Array:
  """seq [T, B, ...] reordered in time per row: out[t, b] = seq[order[t, b], b]."""
  return jnp.take_along_axis(seq, order.reshape(order.shape + (1,) * (seq.ndim - 2)), axis=0)


def _reversed_resets(resets: jax.Array | None, mask: jax.Array | None,
                     order: jax.Array) -> jax.Array | None:
  """Episode starts of the reversed rows: each episode's last valid step, reordered."""
  if resets is None:
    return None
  valid = jnp.ones_like(resets) if mask is None else mask
  steps = resets.shape[0]
  nxt = _next_valid(valid)  # t ends an episode <=> the next valid step starts one
  ends = valid & (nxt < steps) & _gather(resets, jnp.minimum(nxt, steps - 1))
  return _gather(ends, order)


def _next_valid(valid: jax.Array) -> jax.Array:
  """[T, B]: the first valid step after t (T if none)."""
  steps = valid.shape[0]
  idx = jnp.where(valid, jnp.arange(steps)[:, None], steps)
  after = jax.lax.cummin(idx[::-1], axis=0)[::-1]  # first valid at or after t
  return jnp.concatenate([after[1:], jnp.full_like(after[:1], steps)], axis=0)


def _engine(cfg: Any) -> str:
  """`cfg.engine`, with `auto` meaning `scan` under batch_per_step norm, whose batch statistics
  couple the rows of a step (the custom VJP assumes they do not)."""
  if cfg.norm != "batch_per_step":
    return cfg.engine
  if cfg.engine.startswith("vjp"):
    raise ValueError(f"engine={cfg.engine!r} cannot run norm='batch_per_step' (its custom VJP "
                     "assumes rows independent within a step); valid: auto, scan, scan_hoisted")
  return "scan" if cfg.engine == "auto" else cfg.engine


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
