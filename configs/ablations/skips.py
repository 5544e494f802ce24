"""Ablation: vertical and horizontal skips in a deep tanh RNN (lecture 2.2, Fig 13.12-13.13).

Claim tested (2.2): skip connections fight dying gradients. Vertical skips (2.2.1) let the
gradient flow down the stack so every layer "feels" it, with no issues; horizontal skips
(2.2.2) bring h_{t-k} forward, so the gradient from far back is "less dead", at the price of
the RNN's bias towards local information (whether that hurts depends on the problem; on a
long-range one "we are okay").

Setup: a 4-layer tanh RNN (32 units per layer, orthogonal W_h, adam, clipping at global norm
1 as in the defaults) on the `adding` problem with T = 50 (the answer needs two values seen up
to 50 steps before the loss; a one-layer tanh RNN stayed near chance there, 0.96, for 3000
steps when this file was written; T = 50 also keeps 45 runs of 4 layers near 10 minutes).
Members:
`model.vertical_skip` in {none, residual, dense} × `model.horizontal_skip` none, or
{residual (+ h_{t-k}), learned (W_s h_{t-k})} × `skip_span` k in {1, 4} (15 settings)
× 3 seeds (45 runs).

Supports the claim: skips move `eval/mse_over_chance` well below 1 where the plain stack stays
at ≈ 1, and `grad_flow/ratio_first_last` (||dL/dh_1|| / ||dL/dh_T||) rises from ~0 with
horizontal skips (more with k = 4: 13 hops instead of 50), and the lower layers' share of
`grad/layer_<l>` rises with vertical skips.
Contradicts it: no skip lifts the 4-layer tanh RNN off chance, or the gradient ratios do not
move.

  python -m rnn_research.sweep --config=configs/ablations/skips.py --workdir=runs/skips \
      --parallel=2
  python -m rnn_research.compare runs/skips --metric=eval/mse_over_chance

Note: `horizontal_skip='residual'` has no decay; with a tanh cell it grows at most linearly
(|h_t| <= t/k + 1), but with a GRU it can grow geometrically (on `kalman` it overflows at the first
step, docs/axes.md); that is why this sweep uses the tanh RNN.
Size: about 10 minutes on 2 CPU cores with 2 members in parallel (`learned` skips with k = 4
are the slowest members, ~2x the plain stack); `skips.py:full` trains 4x longer with 128
units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: None or "small" (the ~10-minute size) or "full"."""
  config = default.ablation_base("skips.py", arg, "adding", "rnn", 2500)
  # A deep stack: vertical skips need layers to skip.
  config.model.num_layers = 4
  # T = 50: long enough that a plain tanh RNN sits near chance (one layer did, 3000 steps,
  # when this file was written), short enough for 4 layers x 15 settings x 3 seeds on 2 cores.
  config.task.length = 50
  return config


def get_sweep() -> list[dict]:
  horizontal = (sweep("model.horizontal_skip", ["none"])
                + product(sweep("model.horizontal_skip", ["residual", "learned"]),
                          sweep("model.skip_span", [1, 4])))
  return product(sweep("model.vertical_skip", ["none", "residual", "dense"]), horizontal,
                 seeds(3))


def get_baseline() -> dict:
  """The group every other is tested against (compare): the plain stack, no skips."""
  return {"model.vertical_skip": "none", "model.horizontal_skip": "none"}


def get_metric() -> tuple[str, str]:
  return ("eval/mse_over_chance", "min")
