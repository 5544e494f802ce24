"""LSTM variants as flag sets; one registry entry per variant.

Greff et al. 2017 ("LSTM: A Search Space Odyssey") define every variant as a change to their
vanilla LSTM, which has peepholes; here that vanilla LSTM is `peephole`, and `standard` is the
PyTorch/Flax LSTM without peepholes (so Greff's `np` equals `standard`).
"""
from __future__ import annotations

import dataclasses

from rnn_research.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class LSTMVariant:
  """Attributes:
    gates: gate blocks present, in PyTorch's order among i (input), f (forget), g (cell input),
      o (output); an absent i, f or o gate is the constant 1.
    peephole: diagonal peepholes p_i ⊙ c_{t-1}, p_f ⊙ c_{t-1}, p_o ⊙ c_t (Gers & Schmidhuber).
    coupled: i = 1 - f (CIFG).
    input_act: g = σ(z_g); False gives g = z_g (NIAF).
    output_act: h = o ⊙ σ(c); False gives h = o ⊙ c (NOAF).
    full_gate_recurrence: i, f, o also receive [i, f, o]_{t-1} R (FGR, 9 extra H x H matrices).
    lecture: c_t = f ⊙ c_{t-1} + (1 - f) ⊙ g (eq. 13.3), g = σ(z_g) (eq. 13.5).
  """

  gates: tuple[str, ...] = ("i", "f", "g", "o")
  peephole: bool = False
  coupled: bool = False
  input_act: bool = True
  output_act: bool = True
  full_gate_recurrence: bool = False
  lecture: bool = False


LSTM_VARIANTS: Registry[LSTMVariant] = Registry("lstm_variant")
LSTM_VARIANTS.register("standard")(LSTMVariant())
LSTM_VARIANTS.register("lecture")(LSTMVariant(gates=("f", "g", "o"), lecture=True))
LSTM_VARIANTS.register("peephole")(LSTMVariant(peephole=True))
LSTM_VARIANTS.register("nig")(LSTMVariant(gates=("f", "g", "o"), peephole=True))
LSTM_VARIANTS.register("nfg")(LSTMVariant(gates=("i", "g", "o"), peephole=True))
LSTM_VARIANTS.register("nog")(LSTMVariant(gates=("i", "f", "g"), peephole=True))
LSTM_VARIANTS.register("niaf")(LSTMVariant(peephole=True, input_act=False))
LSTM_VARIANTS.register("noaf")(LSTMVariant(peephole=True, output_act=False))
LSTM_VARIANTS.register("np")(LSTMVariant())
LSTM_VARIANTS.register("cifg")(LSTMVariant(gates=("f", "g", "o"), peephole=True, coupled=True))
LSTM_VARIANTS.register("fgr")(LSTMVariant(peephole=True, full_gate_recurrence=True))
