"""Ablation: vertical skips in a deep tanh RNN, with depth controls (lecture 2.2.1, Fig 13.12).

Claim tested (2.2.1): vertical skips let the gradient flow down the stack, so every layer
"feels" it, with no issues: a deep stack with skips trains where the plain deep stack struggles.
The mechanism is measurable: the share of the gradient that reaches the bottom layer.

Setup: a tanh RNN (32 units per layer, orthogonal W_h, adam, clipping at global norm 1 as in the
defaults, 2500 steps) on the `adding` problem with T = 50. Members: plain stacks of 1, 2 and 4
layers (the controls: does depth alone help or hurt here?), and 4-layer stacks with `residual`
(h^(l) + h^(l-1)) and `dense` (every layer reads the input and all layers below; Graves 2013)
skips, × 5 seeds (25 runs). Horizontal skips have their own sweep (horizontal_skips.py).

Supports the claim: the 4-layer stacks with skips end lower in `eval/mse_over_chance` than the
plain 4-layer stack (the baseline), at least as low as the 1- and 2-layer controls, and their
`grad/ratio_first_last_layer` (||dL/dθ_0|| / ||dL/dθ_3||, logged every step) is higher than the
plain stack's: more of the gradient reaches the bottom layer.
Contradicts it: skips do not change the final metric against the plain 4-layer stack (the CI
of the ratio includes 1), or the bottom layer's share of the gradient does not rise with them.

  python -m rnn_research.sweep --config=configs/ablations/skips.py --workdir=runs/skips \
      --parallel=2
  python -m rnn_research.compare runs/skips --metric=eval/mse_over_chance
  python -m rnn_research.compare runs/skips --metric=grad/ratio_first_last_layer --mode=max

Size: 25 runs, the 4-layer ones about 4x a 1-layer run; `skips.py:full` trains 4x longer with
128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the CPU size) or "full"."""
  config = default.ablation_base("skips.py", arg, "adding", "rnn", 2500)
  config.model.num_layers = 4
  # T = 50: a plain tanh stack learns slowly here, so skips have room to help.
  config.task.length = 50
  return config


def get_sweep() -> list[dict]:
  plain = [{"model.num_layers": depth, "model.vertical_skip": "none"} for depth in (1, 2, 4)]
  skipped = [{"model.num_layers": 4, "model.vertical_skip": kind}
             for kind in ("residual", "dense")]
  return product(plain + skipped, seeds(5))


def get_baseline() -> dict:
  """The group every other is tested against (compare): the plain 4-layer stack."""
  return {"model.num_layers": 4, "model.vertical_skip": "none"}


def get_metric() -> tuple[str, str]:
  return ("eval/mse_over_chance", "min")
