"""Ablation: horizontal skips and the locality trade-off (lecture 2.2.2, Fig 13.13).

Claim tested (2.2.2): a horizontal skip brings h_{t-k} forward, so the gradient from k steps
back is "less dead" (one hop instead of k) and long-range dependences become learnable, at the
price of the RNN's bias towards local information: on a long-range problem "we are okay", on a
local one the skip can cost.

Setup: a 1-layer tanh RNN (32 units, orthogonal W_h, adam, clipping at global norm 1) on two
problems: `adding` with T = 150 (long range: the answer needs two values seen up to 150 steps
back; the default) and `kalman` (`horizontal_skips.py:kalman`: local, the optimal filter weighs
the last few observations most); and `multiscale` (`:multiscale`, lecture section 3: a regime
that lasts about 20 steps and switches suddenly, `eval/accuracy`, higher is better), where the
context to keep spans several steps. Members: no skip; `learned` (z_t += W_s h_{t-k}); and
`residual` (h_t += h_{t-k}) with `mini_vertical` norm (the residual skip has no decay: the norm
keeps the carry bounded), each with span k in {1, 4, 16}; and `mini_vertical` alone, without a
skip (the control that tells the skip's effect from the norm's); × 5 seeds (40 runs per
problem; 3 seeds, 24 runs, on `multiscale`).

Supports the claim: on `adding` the skips, more so with larger k, end below the no-skip baseline
in `eval/mse_over_chance` and raise `grad_flow/ratio_first_last/layer_0` (||dL/dh_1|| /
||dL/dh_T||); on `kalman` they end above the baseline in `eval/mse_over_kalman` (the locality
cost), more so with larger k.
Contradicts it: no skip helps on `adding`, or none costs on `kalman` (both CIs of the ratio to
the baseline include 1: "no evidence" either way).

  python -m rnn_research.sweep --config=configs/ablations/horizontal_skips.py \
      --workdir=runs/hskips --parallel=2
  python -m rnn_research.compare runs/hskips --metric=eval/mse_over_chance
  python -m rnn_research.sweep --config=configs/ablations/horizontal_skips.py:kalman \
      --workdir=runs/hskips_kalman --parallel=2
  python -m rnn_research.compare runs/hskips_kalman --metric=eval/mse_over_kalman
  python -m rnn_research.sweep --config=configs/ablations/horizontal_skips.py:multiscale \
      --workdir=runs/hskips_multiscale --parallel=2
  python -m rnn_research.compare runs/hskips_multiscale --metric=eval/accuracy

Size: 40 one-layer runs per problem (24 on `multiscale`); `:full` trains 4x longer with 128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds

SPANS = [1, 4, 16]


def _options(arg: str | None) -> set[str]:
  opts = set(arg.split(",")) if arg else set()
  if opts - {"small", "full", "kalman", "multiscale"} or {"kalman", "multiscale"} <= opts:
    raise ValueError(f"horizontal_skips.py: unknown arg {arg!r}; valid: small or full, and "
                     "one of kalman, multiscale")
  return opts


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: comma-separated options: small (default size) or full; kalman (the local problem)
  or multiscale (regime switching)."""
  opts = _options(arg)
  size = "full" if "full" in opts else None
  for task in ("kalman", "multiscale"):
    if task in opts:
      return default.ablation_base("horizontal_skips.py", size, task, "rnn", 3000)
  config = default.ablation_base("horizontal_skips.py", size, "adding", "rnn", 3000)
  config.task.length = 150
  return config


def get_sweep(arg: str | None = None) -> list[dict]:
  """The members (`arg` as in get_config)."""
  skips = [{"model.horizontal_skip": "learned"},
           {"model.horizontal_skip": "residual", "model.norm": "mini_vertical"}]
  # The longest spans first (they cost the most), so that the sweep's slots finish together.
  spans = [{**skip, "model.skip_span": k} for k in sorted(SPANS, reverse=True) for skip in skips]
  control = [{"model.horizontal_skip": "none", "model.norm": "mini_vertical"}]
  members = spans + [{"model.horizontal_skip": "none"}] + control
  return product(members, seeds(3 if "multiscale" in _options(arg) else 5))


def get_baseline() -> dict:
  """The group every other is tested against (compare): no skip."""
  return {"model.horizontal_skip": "none"}


def get_metric(arg: str | None = None) -> tuple[str, str]:
  """The metric of the problem (`arg` as in get_config)."""
  opts = _options(arg)
  if "multiscale" in opts:
    return ("eval/accuracy", "max")
  return ("eval/mse_over_kalman" if "kalman" in opts else "eval/mse_over_chance", "min")
