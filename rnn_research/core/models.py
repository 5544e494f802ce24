"""The stacked recurrent model (composed RNN, Fig 13.4) and `build`, its one constructor.

  model = build(config.model, in_features=F, out_features=O, rngs=nnx.Rngs(0))
  ys = model(xs, mask)                    xs [B, T, F], mask [B, T] bool -> ys [B, T, O]
  ys = model(xs, mask, resets=r, key=k)   r [B, T] bool: episode starts; k: dropout's PRNG key
  state = model.initial_state(B)          one `Carry` per layer
  state, y_t = model.step(state, x_t)     x_t [B, F] -> y_t [B, O]; equals ys[:, t]

Layer l's output sequence is layer l+1's input; the readout maps the top layer's h_t to y_t.
Past a sequence's end (mask false) every carry is frozen and y_t = 0.
Execution `layer_major` runs one scan per layer (the engine's strategies apply);
`time_major` runs one scan over time with every layer inside the step, as streaming does.
Both wire the layers the same way (`execution.py`): vertical skips (`vertical_skip.py`),
dropout (`dropout.py`) and the between-layer norms; `bidirectional.py` reverses time for the
backward stack.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from rnn_research.core import bidirectional, cudnn, dropout, execution
from rnn_research.core.carry import Carry
from rnn_research.core.cells import CELLS, Cell
from rnn_research.core.choices import BETWEEN_LAYER_NORMS
from rnn_research.core.engine import strategy
from rnn_research.core.norms import StepBatchNorm, StepLayerNorm, VerticalNorm, between_layers
from rnn_research.core.readout import Readout
from rnn_research.core.spec import ModelSpec

State = tuple[Carry, ...]


class RecurrentStack(nnx.Module):
  """`num_layers` cells of output width `output_size` (hidden_size, or proj_size), the design
  axes between and inside them, and an optional per-step readout; built by `build` from a
  checked `ModelSpec`.

  Between-layer norms act on h^(l) before it goes up; `mini_vertical` and horizontal skips act
  inside the step (`Cell.step_pointwise`); `vertical` norm acts on all layers' carries at one
  step, so a model with it runs time-major. A bidirectional model's second stack reads each
  sequence's valid part from its end; its top output joins the forward one before the readout.
  """

  def __init__(self, spec: ModelSpec, in_features: int, out_features: int | None,
               rngs: nnx.Rngs):
    size, depth = spec.output_size, spec.num_layers
    self.in_features = in_features
    self.how = strategy(spec.run_engine, spec.remat, backward_chunk=spec.backward_chunk,
                        unroll=spec.unroll)
    self.vertical_skip = spec.vertical_skip
    self.layers = nnx.List(build_cells(spec, in_features, rngs))
    self.between = nnx.List([
        between_layers(spec.norm, size, eps=spec.norm_eps, momentum=spec.norm_momentum,
                       eval_stats=spec.eval_norm_stats)
        if spec.norm in BETWEEN_LAYER_NORMS and l in spec.normed_layers else None
        for l in range(depth)])
    self.vertical_norm = (VerticalNorm(depth, size, spec.norm_eps)
                          if spec.norm == "vertical" else None)
    self.time_major = spec.execution == "time_major" or self.vertical_norm is not None
    self.project = (nnx.Linear(in_features, size, use_bias=False, rngs=rngs)
                    if spec.vertical_skip == "residual" and in_features != size else None)
    self.deterministic = False  # nnx's `eval()` sets it: no dropout
    self.rates = dropout.DropoutRates(
        out=spec.dropout, rec=spec.recurrent_dropout,
        inp=spec.recurrent_dropout if spec.recurrent_dropout_inputs else 0.0)
    self.use_resets, self.merge = spec.resets, spec.bidirectional
    self.reverse_stack = None if spec.bidirectional == "none" else RecurrentStack(
        spec.replace(bidirectional="none"), in_features, None, rngs)
    top = size * depth if spec.vertical_skip == "dense" else size
    top *= 2 if spec.bidirectional == "concat" else 1
    self.readout = None if out_features is None else Readout(
        spec.readout, top, out_features, spec.readout_hidden, self.layers[0].activation, rngs)

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
    `probes` [L, B, T, H], if given, is added to every layer's h_t where it leaves the step;
    with zeros the gradient w.r.t. `probes` is dL/dh_t^(l), the lecture's gradient-flow
    measurement (section 2). It runs time-major (a bidirectional model's probes reach its
    forward stack).
    """
    xs, mask, resets = _checked(self, xs, mask, resets, step=False)
    if self.reverse_stack is not None and (state is not None or return_state):
      raise ValueError("a bidirectional model carries no state from one call to the next: its "
                       "backward stack reads each whole sequence from its end")
    key = self._dropout_key(key)
    xs = jnp.swapaxes(xs, 0, 1)
    hs, state = self._hidden(xs, mask, state, probes, resets, key)
    if self.reverse_stack is not None:
      order = bidirectional.reversal(mask, *xs.shape[:2])
      back_key = None if key is None else jax.random.fold_in(key, len(self.layers))
      hb, _ = self.reverse_stack._hidden(
          bidirectional.gather(xs, order), mask, None, None,
          bidirectional.reversed_resets(resets, mask, order), back_key)
      hs = bidirectional.merge(hs, bidirectional.gather(hb, order), self.merge)
    ys = self._read(jnp.swapaxes(hs, 0, 1), None if mask is None else mask.T)
    return (ys, state) if return_state else ys

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
    x_t, mask_t, reset_t = _checked(self, x_t, mask_t, reset_t, step=True)
    inits = (None,) * len(state) if reset_t is None else self.initial_state(
        x_t.shape[0], jnp.result_type(x_t.dtype, jnp.float32))
    params = [cell.weights() for cell in self.layers]
    noise = [dropout.LayerNoise()] * len(self.layers)
    state, h, _ = execution.step_layers(self, params, state, x_t, mask_t, None, reset_t,
                                        inits, noise)
    return state, self._read(h, mask_t)

  def per_step_ok(self) -> bool:
    """Whether the model can run step by step in its current mode (streaming, time-major,
    gradient-flow probes): not while a norm uses whole-sequence statistics."""
    return all(norm is None or norm.per_step_ok() for norm in self.between)

  def _hidden(self, xs: jax.Array, mask: jax.Array | None, state: State | None,
              probes: jax.Array | None, resets: jax.Array | None, key: jax.Array | None):
    """Time-major xs [T, B, F] -> (top hidden sequence [T, B, top], final state)."""
    batch, dtype = xs.shape[1], jnp.result_type(xs.dtype, jnp.float32)
    state = self.initial_state(batch, dtype) if state is None else state
    inits = self.initial_state(batch, dtype) if resets is not None else (None,) * len(state)
    noise = dropout.draw(key, self.rates, [(c.in_features, c.hidden_size) for c in self.layers],
                         xs.shape[0], batch, dtype)
    params = [cell.weights() for cell in self.layers]
    if probes is not None:
      probes = _time_major_probes(
          probes, (len(self.layers), batch, xs.shape[0], self.layers[-1].hidden_size))
    if self.time_major or probes is not None:
      self._check_per_step("time-major execution (and gradient-flow probes)")
      return execution.time_major(self, params, xs, mask, state, probes, resets, inits,
                                  noise)
    if self.how.cudnn:  # the whole stack in one kernel; dropout is refused, so no noise
      return cudnn.run_stack(params, xs, mask, state, hidden_size=self.layers[0].hidden_size,
                             resets=resets)
    return execution.layer_major(self, params, xs, mask, state, resets, inits, noise)

  def _dropout_key(self, key: jax.Array | None) -> jax.Array | None:
    """The key dropout draws from, or None when no dropout applies (eval mode, rates 0)."""
    if self.deterministic or not self.rates.any():
      return None
    if key is None:
      raise ValueError("config.model.dropout/recurrent_dropout > 0: a training-mode call needs "
                       "key=<PRNG key> (the trainer passes one per step); call model.eval() "
                       "for the deterministic model")
    return key

  def _check_per_step(self, what: str) -> None:
    """Sequence-statistics norms in training have no per-step form."""
    if not self.per_step_ok():
      norm = next(n for n in self.between if n is not None and not n.per_step_ok())
      raise ValueError(f"{what} applies norms step by step, but this model's "
                       f"{type(norm).__name__} uses whole-sequence statistics (training "
                       "mode, or eval_norm_stats='sequence'): call model.eval() with "
                       "running statistics first, or use execution='layer_major'")

  def _read(self, h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Readout of h [..., H]; zero where mask [...] is False."""
    y = h if self.readout is None else self.readout(h)
    return y if mask is None else jnp.where(mask[..., None], y, jnp.zeros_like(y))


def build_cells(spec: ModelSpec, in_features: int, rngs: nnx.Rngs) -> list[Cell]:
  """The layers' cells, built from the spec's common keys and the cell's own `spec_args`."""
  cls = CELLS.get(spec.cell)
  own = {arg: getattr(spec, key) for arg, key in cls.spec_args.items()}
  upper = spec.output_size + (in_features if spec.vertical_skip == "dense" else 0)
  cells = []
  for l in range(spec.num_layers):
    normed = l in spec.normed_layers
    cell = cls(in_features if l == 0 else upper, spec.hidden_size, rngs=rngs,
               activation=spec.activation, recurrent_init=spec.recurrent_init,
               recurrent_scale=spec.recurrent_scale, horizontal_skip=spec.horizontal_skip,
               skip_span=spec.skip_span, learned_initial_state=spec.learned_initial_state,
               carry_norm_eps=spec.norm_eps if spec.norm == "mini_vertical" and normed else None,
               dtype=spec.dtype,
               **own)
    width = cell.w_x.shape[1]  # G*H, both projections' width
    if spec.norm == "batch_per_step" and normed:
      cell.step_norm = StepBatchNorm(width, spec.norm_max_steps, spec.norm_eps,
                                     spec.norm_momentum)
    if spec.norm == "layer_per_step" and normed:  # with LN(c_t) for a cell that has c
      cell.step_ln = StepLayerNorm(width, spec.norm_eps, cell.carry_fields().get("c"))
    cells.append(cell)
  return cells


def _checked(stack: RecurrentStack, x: jax.Array, mask: jax.Array | None,
             resets: jax.Array | None, step: bool
             ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
  """The inputs x [B, T, F] (one step: [B, F]) with mask and resets checked, time-major;
  resets are dropped with `config.model.resets=False`."""
  x = jnp.asarray(x)
  dims, name = ("[batch, ", "step ") if step else ("[batch, time, ", "")
  if x.ndim != (2 if step else 3) or x.shape[-1] != stack.in_features:
    raise ValueError(f"{'step input' if step else 'inputs'} must be {dims}{stack.in_features}]"
                     f", got shape {tuple(x.shape)}")
  mask = _flags(f"{name}mask", mask, x.shape[:-1])
  resets = (_flags("step reset" if step else "resets", resets, x.shape[:-1], mask)
            if stack.use_resets else None)
  return x, mask, resets


def _time_major_probes(probes: jax.Array, expected: tuple[int, ...]) -> jax.Array:
  """Gradient-flow probes [L, B, T, H], checked, as [T, L, B, H]."""
  if tuple(probes.shape) != expected:
    raise ValueError(f"probes must be [layers, batch, time, hidden] = {expected}, got "
                     f"{tuple(probes.shape)}")
  return jnp.moveaxis(probes, 2, 0)


def _flags(name: str, flags: jax.Array | None, shape: tuple[int, ...],
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


def _check_features(in_features: Any, out_features: Any) -> None:
  """`build`'s sizes: in_features a positive int, out_features one or None."""
  def positive(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1
  if not positive(in_features):
    raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
  if out_features is not None and not positive(out_features):
    raise ValueError(f"out_features must be a positive integer or None, got {out_features!r}")


def build(config: Mapping[str, Any] | ModelSpec, in_features: int, out_features: int | None,
          rngs: nnx.Rngs) -> RecurrentStack:
  """The model of `config.model` (a ConfigDict, a dict of some keys, or a `ModelSpec`; every
  key and its default: `core/spec.py`), checked once here.

  `out_features=None` gives no readout: the call returns the top layer's h [B, T, H].
  """
  spec = ModelSpec.from_config(config)
  _check_features(in_features, out_features)
  model = RecurrentStack(spec, in_features, out_features, rngs)
  if spec.param_dtype != "float32":  # every parameter stored in param_dtype
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda a: a.astype(spec.param_dtype), params))
  return model
