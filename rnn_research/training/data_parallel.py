"""Data-parallel training of one run with `jax.sharding`: a 1-D mesh over the batch axis.

With `config.train.data_parallel`, every batch is split over all devices along its batch axis
(`NamedSharding(mesh, P(..., "data"))`) and the training state is replicated; `jit` inserts
the gradient all-reduce, so the step computes the same function as on one device (float
summation order aside). Batches are a pure function of (seed, step), so every host makes the
whole batch and hands each local device its slice (`make_array_from_callback`): the same code
runs on one host with several devices and on many hosts after `initialize_multihost()`.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m rnn_research.main ... \
      --config.train.data_parallel=True
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_multihost() -> None:
  """`jax.distributed.initialize()`: coordinator and process ids from the cluster's env."""
  jax.distributed.initialize()


def batch_mesh(batch_size: int) -> Mesh:
  """A mesh named "data" over every device; the batch must split evenly across them."""
  devices = jax.devices()
  if batch_size % len(devices):
    raise ValueError(f"config.train.batch_size={batch_size} must be a multiple of the "
                     f"{len(devices)} devices for data_parallel")
  return Mesh(np.asarray(devices), ("data",))


def shard_batch(mesh: Mesh, batch: dict[str, np.ndarray], axis: int = 0) -> dict[str, jax.Array]:
  """Each array split over the mesh along `axis` (its batch axis); built from host data."""
  spec = NamedSharding(mesh, P(*([None] * axis), "data"))
  return {k: jax.make_array_from_callback(v.shape, spec, lambda index, v=v: v[index])
          for k, v in batch.items()}


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Every leaf copied to every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))
