"""Ablation: the LSTM and its Greff et al. (2017) variants against the vanilla RNN and the GRU
on a long-range dependence (lecture section 4, 2.2.3).

Claim tested (4.2, 4.3.2): a learned forget gate turns the horizontal skip into a learnable one
("how far the gradient can flow"), so an LSTM "fixes the issue of dying gradients where it
needs to be fixed", where a vanilla RNN cannot; the lecture's own cell (eq. 13.3-13.6,
c_t = f c_{t-1} + (1 - f) i) and the GRU have "rather similar structures". Greff et al. 2017
found the forget gate and the output activation the critical parts, and coupling the input and
forget gates (CIFG) or dropping peepholes harmless.

Setup: the `adding` problem (T = 150; the two marked values can be 149 steps before the loss),
one layer of 32 units, adam with clipping at global norm 1 (the defaults). Members: `model.cell`
lstm with `lstm_variant` in {standard, lecture, peephole, nig, nfg, nog, niaf, noaf, np, cifg,
fgr}, the lecture cell with its stop-gradient c* term (`lecture_peephole=True`), and `cell` rnn
(tanh) and gru, × 3 seeds (42 runs).

Supports the claim: the vanilla RNN stays at chance (`eval/mse_over_chance` ≈ 1) while the
LSTM, the lecture cell and the GRU go well below it; among the variants, nfg (no forget gate)
and noaf (no output activation) are the ones that fall behind, the others are close.
Contradicts it: the vanilla RNN matches the gated cells, or the gated cells stay at chance too,
or removing the forget gate costs nothing.

  python -m rnn_research.sweep --config=configs/ablations/lstm_variants.py \
      --workdir=runs/lstm_variants --parallel=2
  python -m rnn_research.compare runs/lstm_variants --metric=eval/mse_over_chance

Size: about 10 minutes on 2 CPU cores with 2 members in parallel (fgr, with 9 more matrices, is
the slowest member); `lstm_variants.py:full` trains 4x longer with 128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep

VARIANTS = ["standard", "lecture", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "np",
            "cifg", "fgr"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the ~10-minute size) or "full"."""
  return default.ablation_base("lstm_variants.py", arg, "adding", "lstm", 2000)


def get_sweep() -> list[dict]:
  models = (sweep("model.lstm_variant", VARIANTS)
            + [{"model.lstm_variant": "lecture", "model.lecture_peephole": True}]
            + sweep("model.cell", ["rnn", "gru"]))
  return product(models, seeds(3))


def get_baseline() -> dict:
  """The group every other is tested against (compare): the standard (vanilla) LSTM."""
  return {"model.lstm_variant": "standard"}


def get_metric() -> tuple[str, str]:
  return ("eval/mse_over_chance", "min")
