"""The `config.model` section: every recurrent-core design axis, its default and its check."""
from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from rnn_research.core import config_section


def model_defaults() -> ml_collections.ConfigDict:
  """Defaults of every `config.model` key (lecture section in brackets)."""
  m = ml_collections.ConfigDict()
  # Recurrent cell, by name: rnn (eq. 13.1), lstm (4.2), gru.
  m.cell = "lstm"
  # Width H of every layer's hidden state h_t.
  m.hidden_size = 64
  # Number of stacked recurrent layers (composed RNN, Fig 13.4).
  m.num_layers = 1
  # σ of eq. 13.1; for lstm/gru the input and output activation (gates stay sigmoid) [2.1.1].
  m.activation = "tanh"
  # rnn only: `linear` filter (W_h h + W_x x + b) or an `mlp` of [h, x] (1.2, Fig 13.3).
  m.transition = "linear"
  # Hidden units of the `mlp` transition.
  m.mlp_hidden = 64
  # lstm only: standard, lecture (eq. 13.3-13.6), peephole, or a Greff et al. 2017 variant.
  m.lstm_variant = "standard"
  # lstm_variant=lecture only: add the stop-gradient c* term of eq. 13.4/13.5.
  m.lecture_peephole = False
  # lstm: initial bias of the forget gate (1.0 keeps memory at the start of training).
  m.forget_bias = 1.0
  # Initialiser of each gate block of W_h: orthogonal, identity (IRNN), normal, lecun.
  m.recurrent_init = "orthogonal"
  # Multiplies the recurrent initialiser: the gain of W_h at step 0.
  m.recurrent_scale = 1.0
  # Per-step map of the top layer to the outputs: linear or mlp.
  m.readout = "linear"
  # Hidden units of the `mlp` readout.
  m.readout_hidden = 64
  # Normalisation placement (2.1.3): none, layer, mini_layer, mini_vertical, vertical, batch,
  # batch_per_step (Cooijmans et al. 2016: x W_x and h W_h, statistics per time step).
  m.norm = "none"
  # Which layers' outputs (or carries) are normalised: "all" or indices, e.g. "0,2".
  m.norm_layers = "all"
  # The epsilon inside every norm's square root.
  m.norm_eps = 1e-5
  # Momentum of the running statistics of `layer` and `batch` norms.
  m.norm_momentum = 0.99
  # batch_per_step: running statistics are kept for steps t < T_max; later steps reuse T_max's.
  m.norm_max_steps = 512
  # `layer` norm, full-sequence eval: running (training) statistics or the sequence's own.
  m.eval_norm_stats = "running"
  # Vertical skips (2.2.1, Fig 13.12): none, residual (h^(l) + h^(l-1)), dense (Graves 2013).
  m.vertical_skip = "none"
  # Horizontal skips (2.2.2, Fig 13.13): none, residual (+ h_{t-k}), learned (W_s h_{t-k}).
  m.horizontal_skip = "none"
  # The span k >= 1 of horizontal skips.
  m.skip_span = 1
  # Dropout rate on each layer's output h^(l) on its way up (not the top layer's); a fresh
  # mask per step (Zaremba et al. 2014). Training only: off in eval and streaming.
  m.dropout = 0.0
  # Dropout rate on h_{t-1} where it enters W_h, one mask per sequence reused at every step
  # (Gal & Ghahramani 2016). Training only.
  m.recurrent_dropout = 0.0
  # Also drop each layer's input x_t where it enters W_x with one mask per sequence at the
  # `recurrent_dropout` rate (Gal & Ghahramani's full variational scheme).
  m.recurrent_dropout_inputs = False
  # Train h_0 (and c_0, ...) of every layer as parameters instead of starting from zeros.
  m.learned_initial_state = False
  # Honour a batch's `resets` [B, T] (a new episode starts: the carry restarts from h_0), so
  # several episodes can be packed in one row; False runs straight through (the ablation).
  m.resets = True
  # A backward stack over each sequence's valid part, merged with the forward stack's top
  # output: none, concat or sum. Non-causal: such a model cannot stream.
  m.bidirectional = "none"
  # How the scan runs: auto (per backend), scan, scan_hoisted, vjp, vjp_hoisted.
  m.engine = "auto"
  # layer_major (one scan per layer, fastest) or time_major (one scan, all layers inside).
  m.execution = "layer_major"
  # Recompute the step in the backward pass instead of storing it (less memory, more time).
  m.remat = False
  # vjp engines: steps per chunk of the reverse scan, whose weight gradients are GEMMs per
  # chunk; 0 = auto (CPU: the chunk whose dz is ~1.5 MiB; GPU/TPU: the whole sequence).
  m.backward_chunk = 0
  return m


def resolve(config: Mapping[str, Any] | ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """Defaults overlaid with `config`; unknown keys fail with the list of valid keys."""
  merged = config_section.resolve(config, model_defaults(), "model")
  for key in ("hidden_size", "num_layers", "mlp_hidden", "readout_hidden", "skip_span",
              "norm_max_steps"):
    if merged[key] < 1:
      raise ValueError(f"config.model.{key} must be a positive integer, got {merged[key]!r}")
  if merged.backward_chunk < 0:
    raise ValueError("config.model.backward_chunk must be 0 (auto) or a positive number of "
                     f"steps, got {merged.backward_chunk!r}")
  for key in ("dropout", "recurrent_dropout"):
    if not 0.0 <= merged[key] < 1.0:
      raise ValueError(f"config.model.{key} must be in [0, 1), got {merged[key]!r}")
  return merged
