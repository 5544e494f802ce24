"""Shared by the model tests: move every parameter off its initial value (unit gains and zero
biases, or a zero learned h_0, hide bugs)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def perturb(model: nnx.Module, scale: float, seed: int = 5) -> nnx.Module:
  """Adds scale * N(0, 1) noise (numpy seed `seed`) to every nnx.Param of `model`, in place."""
  leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(seed)
  nnx.update(model, jax.tree.unflatten(
      treedef, [p + jnp.asarray(scale * rng.normal(size=p.shape), p.dtype) for p in leaves]))
  return model
