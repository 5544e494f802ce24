"""Ablation: where to normalise a stacked RNN (lecture 2.1.3, Fig 13.7-13.11).

Claim tested (2.1.3): normalisation helps with exploding gradients (and somewhat with dying
ones), and its placement matters: `layer` norm between layers trains fine but at test time,
step by step, it must use statistics from training (the eval here does, `eval_norm_stats=
'running'`); `mini_layer` (per step, on the way up) and `mini_vertical` (per step, on the way to
the next step) work; `vertical` (across the layers at one step) "is not done in practice"; `batch`
is possible but not usually done.

Setup: a 3-layer ReLU RNN (32 units per layer, orthogonal W_h at gain 1.0, adam) on the `adding`
problem (T = 150, loss at the last step) with gradient clipping OFF, the RNN whose gradients
explode without help (configs/ablations/clipping.py is the same RNN fixed by clipping instead).
Three layers, so that between-layer and across-layer (`vertical`) placements have something to
act on. Members: `model.norm` in {none, layer, mini_layer, mini_vertical, vertical, batch,
batch_per_step, layer_per_step} × 3 seeds (the last two: Cooijmans et al. 2016's and Ba et al.
2016's per-step norms of x W_x and h W_h inside the cell), plus `layer` evaluated with each sequence's own statistics
(`eval_norm_stats='sequence'`, not streamable: the gap to `layer` is what streaming with
training statistics costs) and `none`/`mini_layer`/`mini_vertical` at width 2 (where a per-step
norm leaves only the order of the two features); 36 runs. `norm_layers='all'`.

Supports the claim: members with a norm diverge less often (`status.json` state `diverged`)
and spike less (`grad/global_norm`) than `none`, and learn more (`eval/mse_over_chance` below
1); norms on the recurrent path (`mini_vertical`, `vertical`: they normalise the carries) act
on the within-layer chain that explodes (and so do the per-step `batch_per_step` and
`layer_per_step`, which normalise h_{t-1} W_h), norms on the way up (`layer`, `mini_layer`, `batch`)
only between layers; `layer`/`batch` show a gap between `train/loss` and the eval with running
statistics (the test-time problem). `vertical` normalises only L = 3 numbers per feature, the
extreme of the lecture's "high-dimensional enough" caveat.
Contradicts it: no placement changes how often or how soon the ReLU RNN diverges, or the
normalised members learn less than `none`.

  python -m rnn_research.sweep --config=configs/ablations/norm_placement.py --workdir=runs/norm \
      --parallel=2
  python -m rnn_research.compare runs/norm --metric=eval/mse_over_chance

`norm_placement.py:tanh` runs the same sweep with a tanh RNN (nothing explodes; the dying-
gradient side of the claim), and `norm_placement.py:kalman` on the `kalman` filtering problem
(tanh, clipping on, 3000 steps), which the stack learns, so that the cost of streaming `layer`
norm with running statistics and of mini norms at width 2 can be read (`eval/mse_over_kalman`). Size, measured on 2 CPU cores with 2 members in parallel: about 6
minutes with relu (most members diverge early) and 13 with tanh (none does; `vertical` runs
time-major, about 3x slower per step);
`:full` (or `:full,tanh`) trains 4x longer with 128 units (for a GPU).
"""
import ml_collections

from configs import default
from rnn_research.sweep_spec import product, seeds, sweep

NORMS = ["none", "layer", "mini_layer", "mini_vertical", "vertical", "batch", "batch_per_step",
         "layer_per_step"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: comma-separated options: small (default size) or full; tanh (σ, default relu);
  kalman (the linear-Gaussian filtering problem, tanh, clipping on: a problem the stack learns)."""
  opts = set(arg.split(",")) if arg else set()
  if opts - {"small", "full", "tanh", "kalman"}:
    raise ValueError(f"norm_placement.py: unknown arg {arg!r}; valid: small, full, tanh, kalman")
  full = "full" in opts
  if "kalman" in opts:
    config = default.for_task("kalman", cell="rnn", hidden_size=128 if full else 32,
                              steps=12000 if full else 3000, batch_size=64)
    config.model.num_layers = 3
    return config
  config = default.for_task("adding", cell="rnn", hidden_size=128 if full else 32,
                            steps=24000 if full else 6000, batch_size=64)
  config.model.num_layers = 3
  config.model.activation = "tanh" if "tanh" in opts else "relu"
  # Clipping off: the norm, not the clip, is what should keep the gradient in check.
  config.train.clip = "none"
  return config


def get_sweep() -> list[dict]:
  placements = sweep("model.norm", NORMS)
  # `layer` evaluated with each sequence's own statistics: not streamable, the upper bound
  # that the running statistics of a streaming eval are measured against.
  whole_sequence = [{"model.norm": "layer", "model.eval_norm_stats": "sequence"}]
  # Width 2: a per-step norm over 2 features leaves only their order (each vector becomes
  # ±1 before gain and bias), where mini norms "lose meaning".
  tiny = product(sweep("model.norm", ["none", "mini_layer", "mini_vertical"]),
                 sweep("model.hidden_size", [2]))
  return product(placements + whole_sequence + tiny, seeds(3))


def get_baseline() -> dict:
  """The group every other is tested against (compare): no norm, 32 units."""
  return {"model.norm": "none"}


def get_metric(arg: str | None = None) -> tuple[str, str]:
  """The metric of the config's task (`arg` as in get_config)."""
  kalman = "kalman" in (arg.split(",") if arg else [])
  return ("eval/mse_over_kalman" if kalman else "eval/mse_over_chance", "min")
