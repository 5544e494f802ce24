"""PyTorch interop: `from_torch` turns a `torch.nn.RNN`, `LSTM` or `GRU` into a `RecurrentStack`.

  model = from_torch(torch_module)        # no readout
  hs = model(xs)                          xs [B, T, F] -> hs [B, T, H], the top layer's h_t

Why: users bring weights trained in PyTorch, and torch's cuDNN-backed modules are an outside
reference that checks our cells equation by equation (tests/test_interop.py).

Mapping, per layer k (torch keeps gate blocks stacked in rows, we keep them side by side):
  w_x = weight_ih_l{k}.T [F, G*H],  w_h = weight_hh_l{k}.T [H, G*H]
  RNN   cell='rnn', activation=nonlinearity, b = b_ih + b_hh
  LSTM  cell='lstm', lstm_variant='standard' (gate order i, f, g, o as torch), b = b_ih + b_hh;
        with proj_size P: w_p = weight_hr_l{k}.T [H, P] and w_h [P, 4H]
  GRU   cell='gru', gate order (r, u, n) = torch's (r, z, n),
        b = b_ih + [b_hr, b_hz, 0] and b_hn = b_hh[2H:] (applied inside r ⊙ (h W_hn + b_hn))
With bias=False every bias is zero. torch's batch_first only changes torch's own layout: the
returned model always takes [B, T, F].
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_research.core.models import RecurrentStack, build

_CELL_OF = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}


def _array(tensor: Any) -> np.ndarray:
  """A torch tensor as a float32 numpy array (detached, on the CPU)."""
  return tensor.detach().cpu().numpy().astype(np.float32)


def _config(module: Any, nn: Any) -> dict[str, Any]:
  """The `config.model` of an equivalent model; ValueError for what has no equivalent."""
  kind = next((name for name in _CELL_OF if type(module) is getattr(nn, name)), None)
  if kind is None:
    raise ValueError(f"from_torch supports torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU, got "
                     f"{type(module).__module__}.{type(module).__qualname__}")
  if module.bidirectional:
    raise ValueError(f"from_torch: bidirectional=True is not supported ({kind}); our stack "
                     "runs forward in time only")
  config = {"cell": _CELL_OF[kind], "hidden_size": int(module.hidden_size),
            "num_layers": int(module.num_layers), "activation": "tanh",
            "transition": "linear", "lstm_variant": "standard", "lecture_peephole": False,
            "recurrent_init": "orthogonal", "recurrent_scale": 1.0,
            "proj_size": int(getattr(module, "proj_size", 0))}
  if kind == "RNN":
    config["activation"] = module.nonlinearity
  return config


def from_torch(module: Any) -> RecurrentStack:
  """A `RecurrentStack` (no readout) computing what `module` computes, in eval mode.

  Supports `torch.nn.RNN` (tanh or relu), `LSTM` (with `proj_size` too) and `GRU` with any
  `num_layers`, `batch_first` and `bias`. `dropout` between layers is ignored: the result equals
  the torch module in eval mode. Raises ValueError for other module types and
  `bidirectional=True`. Needs torch installed (imported here only).
  """
  try:
    import torch
  except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("from_torch needs PyTorch: pip install torch") from err
  if not isinstance(module, torch.nn.Module):
    raise ValueError(f"from_torch expects a torch.nn.RNN, LSTM or GRU, got {type(module)!r}")
  config = _config(module, torch.nn)
  model = build(config, in_features=int(module.input_size), out_features=None,
                rngs=nnx.Rngs(0))
  size = config["hidden_size"]
  for k, cell in enumerate(model.layers):
    w_ih = _array(getattr(module, f"weight_ih_l{k}"))
    w_hh = _array(getattr(module, f"weight_hh_l{k}"))
    gates = w_ih.shape[0]
    if module.bias:
      b_ih = _array(getattr(module, f"bias_ih_l{k}"))
      b_hh = _array(getattr(module, f"bias_hh_l{k}"))
    else:
      b_ih = b_hh = np.zeros((gates,), np.float32)
    cell.w_x[...] = jnp.asarray(w_ih.T)
    cell.w_h[...] = jnp.asarray(w_hh.T)
    if config["cell"] == "gru":
      cell.b[...] = jnp.asarray(b_ih + np.concatenate([b_hh[:2 * size],
                                                       np.zeros((size,), np.float32)]))
      cell.b_hn[...] = jnp.asarray(b_hh[2 * size:])
    else:
      cell.b[...] = jnp.asarray(b_ih + b_hh)
    if config["proj_size"]:
      cell.w_p[...] = jnp.asarray(_array(getattr(module, f"weight_hr_l{k}")).T)
  return model
