"""`ModelSpec`: the typed `config.model`. It owns every key's default, valid choices and range,
and every rule that spans axes; `ModelSpec.from_config` checks them all, once, in `build`.

Every error is one `ValueError` that names the key and what would be valid.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from rnn_research.core import choices, config_section, cudnn
from rnn_research.core.activations import ACTIVATIONS
from rnn_research.core.cells import CELLS, LSTM_VARIANTS
from rnn_research.core.initializers import RECURRENT_INITS

_POSITIVE = ("hidden_size", "num_layers", "mlp_hidden", "readout_hidden", "skip_span",
             "norm_max_steps", "unroll")
_LITERALS = {"transition": choices.Transition, "readout": choices.ReadoutKind,
             "norm": choices.Norm, "eval_norm_stats": choices.EvalNormStats,
             "vertical_skip": choices.VerticalSkip, "horizontal_skip": choices.HorizontalSkip,
             "bidirectional": choices.Bidirectional, "engine": choices.Engine,
             "execution": choices.Execution, "dtype": choices.Dtype,
             "param_dtype": choices.Dtype}
_REGISTRIES = {"cell": CELLS, "activation": ACTIVATIONS, "recurrent_init": RECURRENT_INITS,
               "lstm_variant": LSTM_VARIANTS}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Every `config.model` key (lecture section in brackets)."""

  # Recurrent cell, by name: rnn (eq. 13.1), lstm (4.2), gru, min_gru, min_lstm, lru.
  cell: str = "lstm"
  # Width H of every layer's hidden state h_t.
  hidden_size: int = 64
  # Number of stacked recurrent layers (composed RNN, Fig 13.4).
  num_layers: int = 1
  # σ of eq. 13.1; for lstm/gru the input and output activation (gates stay sigmoid) [2.1.1].
  activation: str = "tanh"
  # rnn only: `linear` filter (W_h h + W_x x + b) or an `mlp` of [h, x] (1.2, Fig 13.3).
  transition: choices.Transition = "linear"
  # Hidden units of the `mlp` transition.
  mlp_hidden: int = 64
  # lru only (Orvieto et al. 2023): N, the number of complex modes of the state (the carry is
  # [Re, Im], 2N wide; the output stays hidden_size wide); 0 means N = hidden_size.
  lru_state_size: int = 0
  # lru only: λ starts uniform on the ring lru_r_min <= |λ| <= lru_r_max, 0 <= min < max < 1
  # (the paper's long-range setting; r_min=0 spreads the modes' memory over all scales).
  lru_r_min: float = 0.9
  lru_r_max: float = 0.999
  # lru only: λ's initial phase is uniform on [0, lru_max_phase] (2π; π/10 for slow rotations).
  lru_max_phase: float = 6.283185307179586
  # lstm only: standard, lecture (eq. 13.3-13.6), peephole, or a Greff et al. 2017 variant.
  lstm_variant: str = "standard"
  # lstm_variant=lecture only: add the stop-gradient c* term of eq. 13.4/13.5.
  lecture_peephole: bool = False
  # lstm: initial bias of the forget gate (1.0 keeps memory at the start of training).
  forget_bias: float = 1.0
  # lstm only: width P of the projected h_t = (o ⊙ σ(c_t)) W_p (LSTMP, Sak et al. 2014; torch's
  # proj_size); 0 = no projection. Each layer's output and W_h's input then have width P.
  proj_size: int = 0
  # Initialiser of each gate block of W_h: orthogonal, identity (IRNN), normal, lecun.
  recurrent_init: str = "orthogonal"
  # Multiplies the recurrent initialiser: the gain of W_h at step 0.
  recurrent_scale: float = 1.0
  # Per-step map of the top layer to the outputs: linear or mlp.
  readout: choices.ReadoutKind = "linear"
  # Hidden units of the `mlp` readout.
  readout_hidden: int = 64
  # Normalisation placement (2.1.3): none, layer, mini_layer, mini_vertical, vertical, batch,
  # batch_per_step (Cooijmans et al. 2016: x W_x and h W_h, statistics per time step),
  # layer_per_step (Ba et al. 2016: LN of x W_x and of h W_h per row and step; lstm: LN(c_t)).
  norm: choices.Norm = "none"
  # Which layers' outputs (or carries) are normalised: "all" or indices, e.g. "0,2".
  norm_layers: str = "all"
  # The epsilon inside every norm's square root.
  norm_eps: float = 1e-5
  # Momentum of the running statistics of `layer` and `batch` norms.
  norm_momentum: float = 0.99
  # batch_per_step: running statistics are kept for steps t < T_max; later steps reuse T_max's.
  norm_max_steps: int = 512
  # `layer` norm, full-sequence eval: running (training) statistics or the sequence's own.
  eval_norm_stats: choices.EvalNormStats = "running"
  # Vertical skips (2.2.1, Fig 13.12): none, residual (h^(l) + h^(l-1)), dense (Graves 2013).
  vertical_skip: choices.VerticalSkip = "none"
  # Horizontal skips (2.2.2, Fig 13.13): none, residual (+ h_{t-k}), learned (W_s h_{t-k}).
  horizontal_skip: choices.HorizontalSkip = "none"
  # The span k >= 1 of horizontal skips.
  skip_span: int = 1
  # Dropout rate on each layer's output h^(l) on its way up (not the top layer's); a fresh
  # mask per step (Zaremba et al. 2014). Training only: off in eval and streaming.
  dropout: float = 0.0
  # Dropout rate on h_{t-1} where it enters W_h, one mask per sequence reused at every step
  # (Gal & Ghahramani 2016). Training only.
  recurrent_dropout: float = 0.0
  # Also drop each layer's input x_t where it enters W_x with one mask per sequence at the
  # `recurrent_dropout` rate (Gal & Ghahramani's full variational scheme).
  recurrent_dropout_inputs: bool = False
  # Train h_0 (and c_0, ...) of every layer as parameters instead of starting from zeros.
  learned_initial_state: bool = False
  # Honour a batch's `resets` [B, T] (a new episode starts: the carry restarts from h_0), so
  # several episodes can be packed in one row; False runs straight through (the ablation).
  resets: bool = True
  # A backward stack over each sequence's valid part, merged with the forward stack's top
  # output: none, concat or sum. Non-causal: such a model cannot stream.
  bidirectional: choices.Bidirectional = "none"
  # How the scan runs: auto (per backend), scan, scan_hoisted, vjp, vjp_hoisted, associative,
  # cudnn (the standard LSTM stack in one cuDNN kernel; NVIDIA GPUs only).
  engine: choices.Engine = "auto"
  # layer_major (one scan per layer, fastest) or time_major (one scan, all layers inside).
  execution: choices.Execution = "layer_major"
  # Recompute the step in the backward pass instead of storing it (less memory, more time).
  remat: bool = False
  # vjp engines: steps per chunk of the reverse scan, whose weight gradients are GEMMs per
  # chunk; 0 = auto (CPU: the chunk whose dz is ~1.5 MiB; GPU/TPU: the whole sequence).
  backward_chunk: int = 0
  # Steps per iteration of every sequential scan (lax.scan's `unroll`): fewer loop iterations,
  # a bigger body. Measured on XLA:CPU: > 1 was slower (docs/speed.md); for GPU experiments.
  unroll: int = 1
  # Compute dtype of the two projections x W_x and h W_h (operands cast to it, float32
  # accumulation); pointwise math and carries stay float32, extra matrices and the readout
  # compute in the parameters' dtype (param_dtype, float32 by default).
  # bfloat16 is the GPU/TPU mixed-precision recipe; on XLA:CPU it measured no faster.
  dtype: choices.Dtype = "float32"
  # The dtype every parameter is stored in (and the optimiser updates).
  param_dtype: choices.Dtype = "float32"

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict | ModelSpec
                  ) -> ModelSpec:
    """The checked spec of `config.model` (a ConfigDict, a dict of some keys, or a spec)."""
    if isinstance(config, ModelSpec):
      config = dataclasses.asdict(config)
    merged = config_section.resolve(config, model_defaults(), "model")
    spec = cls(**merged.to_dict())
    _check_values(spec)
    _check_rules(spec)
    return spec

  def replace(self, **changes: Any) -> ModelSpec:
    return dataclasses.replace(self, **changes)

  @property
  def normed_layers(self) -> tuple[int, ...]:
    """The layers `norm` acts on (none when norm='none'), from `norm_layers`."""
    if self.norm == "none":
      return ()
    if self.norm_layers == "all":
      return tuple(range(self.num_layers))
    try:
      layers = tuple(sorted({int(part) for part in self.norm_layers.split(",")}))
    except ValueError:
      layers = ()
    if not layers or any(not 0 <= l < self.num_layers for l in layers):
      raise ValueError(f"norm_layers must be 'all' or comma-separated layer indices in "
                       f"[0, {self.num_layers - 1}], got {self.norm_layers!r}")
    return layers

  @property
  def output_size(self) -> int:
    """The width of each layer's h_t and output: proj_size if set, else hidden_size."""
    return self.proj_size or self.hidden_size

  @property
  def run_engine(self) -> str:
    """`engine`, with `auto` meaning `scan` under batch_per_step norm, whose batch statistics
    couple the rows of a step (the custom VJP assumes they do not)."""
    return "scan" if self.norm == "batch_per_step" and self.engine == "auto" else self.engine


def _check_values(spec: ModelSpec) -> None:
  """Ranges and choices of single keys; a typo fails even where the chosen cell ignores it."""
  for key in _POSITIVE:
    if getattr(spec, key) < 1:
      raise ValueError(f"config.model.{key} must be a positive integer, got "
                       f"{getattr(spec, key)!r}")
  if spec.proj_size < 0:
    raise ValueError(f"config.model.proj_size must be 0 (off) or a positive width, got "
                     f"{spec.proj_size!r}")
  if spec.backward_chunk < 0:
    raise ValueError("config.model.backward_chunk must be 0 (auto) or a positive number of "
                     f"steps, got {spec.backward_chunk!r}")
  for key in ("dropout", "recurrent_dropout"):
    if not 0.0 <= getattr(spec, key) < 1.0:
      raise ValueError(f"config.model.{key} must be in [0, 1), got {getattr(spec, key)!r}")
  for key, registry in _REGISTRIES.items():
    registry.get(getattr(spec, key))
  for key, kind in _LITERALS.items():
    choices.check(key, getattr(spec, key), kind)
  spec.normed_layers  # noqa: B018  (parses norm_layers)
  _check_lru(spec)


def _check_lru(spec: ModelSpec) -> None:
  """The LRU's keys: a state size >= 0, a ring inside the unit disc, a positive phase."""
  if spec.lru_state_size < 0:
    raise ValueError("config.model.lru_state_size must be 0 (= hidden_size) or a positive "
                     f"number of modes, got {spec.lru_state_size!r}")
  if not 0.0 <= spec.lru_r_min < spec.lru_r_max < 1.0:
    raise ValueError("config.model.lru_r_min and lru_r_max must satisfy 0 <= lru_r_min < "
                     f"lru_r_max < 1, got {spec.lru_r_min!r} and {spec.lru_r_max!r}")
  if not spec.lru_max_phase > 0.0:
    raise ValueError("config.model.lru_max_phase must be positive (radians), got "
                     f"{spec.lru_max_phase!r}")


def _check_rules(spec: ModelSpec) -> None:
  """Rules that span axes."""
  recurrent = CELLS.get(spec.cell).recurrent
  if spec.engine == "associative" and recurrent:
    raise ValueError(f"engine='associative' runs linear-recurrence cells only (min_gru, "
                     f"min_lstm, lru); cell={spec.cell!r} has W_h: use engine='auto'")
  if spec.transition != "linear" and spec.cell != "rnn":
    raise ValueError(f"transition={spec.transition!r} is defined for cell='rnn' only "
                     f"(got cell={spec.cell!r}); use transition='linear'")
  if spec.proj_size and spec.cell != "lstm":
    raise ValueError(f"proj_size={spec.proj_size} projects the LSTM's h_t and is defined for "
                     f"cell='lstm' only (got cell={spec.cell!r}); use proj_size=0")
  if spec.proj_size >= spec.hidden_size:
    raise ValueError(f"proj_size={spec.proj_size} must be smaller than hidden_size="
                     f"{spec.hidden_size} (as torch requires: a projection as wide as the cell "
                     "saves nothing); use proj_size=0 for none")
  if spec.lecture_peephole and not LSTM_VARIANTS.get(spec.lstm_variant).lecture:
    raise ValueError("lecture_peephole=True needs lstm_variant='lecture', got "
                     f"{spec.lstm_variant!r}")
  if spec.norm == "vertical" and spec.num_layers < 2:
    raise ValueError("norm='vertical' normalises across layers and needs num_layers >= 2, "
                     f"got {spec.num_layers}")
  if spec.norm == "vertical" and len(spec.normed_layers) != spec.num_layers:
    raise ValueError("norm='vertical' normalises across all layers; use norm_layers='all'")
  if spec.engine == "cudnn" and (reason := cudnn.refusal(spec, backend=None)):
    raise ValueError(reason)  # the design; the backend is checked where the kernel runs
  if not recurrent:
    _check_linear_recurrence(spec)
  elif spec.norm == "batch_per_step" and spec.engine.startswith("vjp"):
    raise ValueError(f"engine={spec.engine!r} cannot run norm='batch_per_step' (its custom "
                     "VJP assumes rows independent within a step); valid: auto, scan, "
                     "scan_hoisted")


def _check_linear_recurrence(spec: ModelSpec) -> None:
  """A cell without W_h (min_gru, min_lstm, lru) is a linear recurrence run by an associative
  scan: axes that put h_{t-1} through a nonlinearity or a matrix inside the step cannot
  combine with it."""
  if spec.norm in ("batch_per_step", "layer_per_step"):
    raise ValueError(f"norm={spec.norm!r} normalises h_{{t-1}} W_h, and this cell has no "
                     "W_h; use norm='layer', 'mini_layer' or 'batch'")
  refusals = {
      "horizontal_skip": (spec.horizontal_skip != "none",
                          "a horizontal skip feeds h_{t-k} into the step (residual: added "
                          "after the cell; learned: through W_s into the gates), so h_t is "
                          "no longer a_t ⊙ h_{t-1} + b_t; use horizontal_skip='none'"),
      "norm": (spec.norm in ("mini_vertical", "vertical"),
               f"norm={spec.norm!r} normalises the carry h_{{t-1}} before the next step, a "
               "nonlinearity inside the recurrence; use a norm on the layer's output "
               "(norm='layer', 'mini_layer' or 'batch') or norm='none'"),
      "recurrent_dropout": (spec.recurrent_dropout > 0,
                            "recurrent dropout masks the h_{t-1} that enters W_h, and there "
                            "is no W_h (it would silently do nothing); use dropout (between "
                            "layers) or recurrent_dropout=0"),
  }
  for key, (bad, why) in refusals.items():
    if bad:
      raise ValueError(f"cell={spec.cell!r} is a linear recurrence run by an associative "
                       f"scan (gates read x_t only, no W_h); {key}={getattr(spec, key)!r} "
                       f"cannot combine with it: {why}")


def model_defaults() -> ml_collections.ConfigDict:
  """The default `config.model`: every key of `ModelSpec` with its default."""
  return ml_collections.ConfigDict(dataclasses.asdict(ModelSpec()))


def resolve(config: Mapping[str, Any] | ml_collections.ConfigDict) -> ModelSpec:
  """`ModelSpec.from_config(config)`."""
  return ModelSpec.from_config(config)
