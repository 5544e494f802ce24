#!/usr/bin/env python
"""Draw ||dL/dh_t|| per layer against t (lecture section 2): dying vs exploding gradients.

  python scripts/grad_flow_figure.py --out=docs

Two untrained 2-layer, 64-unit RNNs on one `adding` batch (the loss sits at the last step, so
the curve is how far back the gradient reaches): tanh with orthogonal W_h, and relu with
W_h = 2 Q (Q orthogonal). The same measurement runs during training every `train.diagnostics_every` steps
(TensorBoard: image `grad_flow/norm_dL_dh`, scalars `grad_flow/ratio_first_last/layer_<l>`).
"""
from __future__ import annotations

import argparse
import os
import sys

try:
  import rnn_research  # noqa: F401
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from rnn_research.training import diagnostics  # noqa: E402
from rnn_research.core import models
from rnn_research.tasks import TASKS  # noqa: E402

CASES = {  # file name: (title, config.model overrides)
    "grad_flow_tanh_orthogonal": ("tanh, W_h orthogonal: dying",
                                  dict(activation="tanh", recurrent_init="orthogonal")),
    "grad_flow_relu_orthogonal_x2": ("relu, W_h = 2 x orthogonal: exploding",
                                     dict(activation="relu", recurrent_init="orthogonal",
                                          recurrent_scale=2.0)),
}


def flow(overrides: dict, task) -> np.ndarray:
  """[L, T] norms of dL/dh_t for an untrained model."""
  model = models.build(dict(cell="rnn", hidden_size=64, num_layers=2, **overrides),
                       task.in_features, task.out_features, nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  batch = task.train_batch(0)
  return np.asarray(diagnostics.gradient_flow(graphdef, params, rest, batch, task.loss))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs")
  parser.add_argument("--length", type=int, default=50)
  args = parser.parse_args()
  task = TASKS.get("adding")({"name": "adding", "length": args.length, "eval_size": 32}, 32, 0)
  os.makedirs(args.out, exist_ok=True)
  for name, (title, overrides) in CASES.items():
    norms = flow(overrides, task)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for layer, row in enumerate(norms):
      ax.semilogy(np.arange(1, len(row) + 1), row, label=f"layer {layer}")
    ax.set(xlabel="time step t", ylabel="||dL/dh_t||", title=title)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, f"{name}.png")
    fig.savefig(path)
    plt.close(fig)
    print(f"{path}: ||dL/dh_1|| / ||dL/dh_T|| per layer =",
          " ".join(f"{row[0] / row[-1]:.3g}" for row in norms))


if __name__ == "__main__":
  main()
