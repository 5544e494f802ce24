"""Batch plumbing shared by the tasks: seeded generators, batch assembly, crops, padding.

Training data is a pure function of (seed, step): `train_rng(seed, step)` seeds a fresh
generator from both, so a run resumed at step k sees exactly the batches it would have seen;
the long streams of truncated BPTT are a pure function of (seed, draw) alike (`stream_rng`).
Each random stream (training, long streams, held-out set, fixed system parameters) has its own
tag, so the streams never coincide whatever the seeds.
"""
from __future__ import annotations

import numpy as np

Batch = dict[str, np.ndarray]
_TRAIN, _STREAM, _EVAL, _SYSTEM = 0x7EA1, 0x57EA, 0xE7A1, 0x5757


def train_rng(seed: int, step: int) -> np.random.Generator:
  """Generator of the training batch at `step` of the run with trainer seed `seed`."""
  return np.random.default_rng([_TRAIN, seed, step])


def stream_rng(seed: int, draw: int) -> np.random.Generator:
  """Generator of the `draw`-th set of long training streams (tasks/streams.py)."""
  return np.random.default_rng([_STREAM, seed, draw])


def eval_rng(seed: int) -> np.random.Generator:
  """Generator of a task's fixed held-out set."""
  return np.random.default_rng([_EVAL, seed])


def system_rng(seed: int) -> np.random.Generator:
  """Generator of a task's fixed system parameters (matrices, angles, ...)."""
  return np.random.default_rng([_SYSTEM, seed])


def make_batch(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None,
               weight: np.ndarray | None = None) -> Batch:
  """A batch with the contract's dtypes; mask defaults to all valid, weight to the mask."""
  x = np.asarray(x, np.float32)
  mask = np.ones(x.shape[:2], bool) if mask is None else np.asarray(mask, bool)
  weight = mask.astype(np.float32) if weight is None else np.asarray(weight, np.float32) * mask
  y = np.asarray(y, np.int32 if np.issubdtype(np.asarray(y).dtype, np.integer) else np.float32)
  return {"x": x, "y": y, "mask": mask, "weight": weight}


def crops(seq: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
  """Windows seq[s:s+length] for each s in starts: [N, ...] -> [len(starts), length, ...]."""
  return seq[np.asarray(starts)[:, None] + np.arange(length)]


def one_hot(ids: np.ndarray, n: int) -> np.ndarray:
  """float32 one-hot encoding: int [...] -> [..., n]."""
  return np.eye(n, dtype=np.float32)[np.asarray(ids)]


def freeze(data: Batch) -> Batch:
  """Read-only views of a batch's arrays (held-out data must not change between calls)."""
  out = {}
  for key, value in data.items():
    value = np.array(value)
    value.flags.writeable = False
    out[key] = value
  return out


def split_batches(data: Batch, batch_size: int) -> list[Batch]:
  """Consecutive read-only batches of `batch_size` rows; the last is padded with rows of zeros
  (mask False, weight 0), so every batch has the same shape."""
  n = len(data["x"])
  out = []
  for start in range(0, n, batch_size):
    chunk = {}
    for key, value in data.items():
      part = value[start:start + batch_size]
      pad = batch_size - len(part)
      if pad:
        part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
      chunk[key] = part
    out.append(freeze(chunk))
  return out


def pack(data: Batch, k: int) -> Batch:
  """n = B * k examples [n, T, ...] -> B rows [B, k * T, ...] of k episodes end to end, plus
  `resets` bool [B, k * T], True where an episode starts (t = 0, T, 2T, ...)."""
  n, steps = data["x"].shape[:2]
  if n % k:
    raise ValueError(f"cannot pack {n} examples into rows of {k}")
  out = {key: np.ascontiguousarray(v.reshape((n // k, k * steps) + v.shape[2:]))
         for key, v in data.items()}
  out["resets"] = np.zeros((n // k, k * steps), bool)
  out["resets"][:, ::steps] = True
  return out
