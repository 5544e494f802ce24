"""Gradient diagnostics of the lecture's section 2 (exploding and dying gradients).

- `gradient_flow`: ||dL/dh_t^(l)|| for every layer l and step t, by the zero-perturbation
  trick: zeros P [L, B, T, H] are added to every h_t (see `RecurrentStack.__call__`), so
  dL/dP = dL/dh_t, with one extra backward pass. A decay towards small t is a dying gradient,
  growth an exploding one.
- `layer_grad_norms`: ||dL/dθ|| per layer and for the readout.
- `spectral_norms`: the largest singular value of each layer's recurrent matrix W_h.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx


def gradient_flow(graphdef: Any, params: Any, rest: Any, batch: dict[str, jax.Array],
                  loss_fn: Callable[[jax.Array, dict], jax.Array]) -> jax.Array:
  """[L, T]: the batch mean over valid sequences of ||dL/dh_t^(l)||_2 (jittable)."""
  model = nnx.merge(graphdef, params, rest)
  model.eval()  # running norm statistics: the probes run the model step by step
  batch_size, steps = batch["x"].shape[:2]
  probes = jnp.zeros((len(model.layers), batch_size, steps, model.layers[-1].hidden_size))

  def loss(probes):
    ys = model(batch["x"], batch["mask"], probes=probes, resets=batch.get("resets"))
    return loss_fn(ys, batch)

  norms = jnp.linalg.norm(jax.grad(loss)(probes), axis=-1)  # [L, B, T]
  valid = batch["mask"].astype(norms.dtype)
  return (norms * valid).sum(axis=1) / jnp.maximum(valid.sum(axis=0), 1.0)


def tree_norm(tree: Any) -> jax.Array:
  """||tree||_2 over all leaves, without float32 overflow: m sqrt(sum((x / m)^2)), m = max|x|.

  The plain sqrt(sum(x^2)) is inf once ||x|| > ~1.8e19 although every entry is finite, and a
  non-finite gradient norm stops training (`train.Diverged`); this one is inf or NaN only when
  an entry is.
  """
  leaves = jax.tree.leaves(tree)
  scale = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves]))
  safe = jnp.where(scale > 0, scale, 1.0)
  return safe * optax.tree.norm(jax.tree.map(lambda x: x / safe, tree))


def gradient_flow_ok(graphdef: Any, state: dict[str, Any]) -> bool:
  """Whether `gradient_flow` can probe this model (in eval mode, step by step)."""
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  return model.per_step_ok()


def gradient_flow_probe(graphdef: Any, state: dict[str, Any],
                        loss_fn: Callable[[jax.Array, dict], jax.Array]
                        ) -> Callable[[Any, Any, dict[str, jax.Array]], jax.Array] | None:
  """The jitted `gradient_flow` (params, rest, batch) -> [L, T] of this model, or None (with a
  warning) where its step-by-step probes cannot run."""
  if not gradient_flow_ok(graphdef, state):
    logging.warning("gradient flow (grad_flow/*) is not measured: its probes run the model "
                    "step by step, which whole-sequence norm statistics do not allow")
    return None
  return jax.jit(lambda p, r, b: gradient_flow(graphdef, p, r, b, loss_fn))


def layer_grad_norms(grads: dict[str, Any]) -> dict[str, jax.Array]:
  """{'grad/layer_<l>': ||dL/dθ_l||, 'grad/readout': ..., 'grad/reverse_stack': ...} from a
  pure-dict gradient (the last for bidirectional models), and with two layers or more
  'grad/ratio_first_last_layer': ||dL/dθ_0|| / ||dL/dθ_{L-1}||, how much of the gradient
  reaches the bottom of the stack (lecture 2.2.1: vertical skips should raise it)."""
  norms = {f"grad/layer_{l}": tree_norm(g) for l, g in grads["layers"].items()}
  if len(norms) > 1:
    first, last = norms["grad/layer_0"], norms[f"grad/layer_{len(norms) - 1}"]
    norms["grad/ratio_first_last_layer"] = first / jnp.maximum(last, 1e-30)
  for part in ("readout", "reverse_stack"):
    if part in grads:
      norms[f"grad/{part}"] = tree_norm(grads[part])
  return norms


def spectral_norms(params: dict[str, Any]) -> dict[str, float]:
  """{'weights/spectral_norm_layer_<l>': σ_max(W_h)} from a pure-dict of parameters."""
  return {f"weights/spectral_norm_layer_{l}": float(np.linalg.norm(np.asarray(p["w_h"]), 2))
          for l, p in params["layers"].items() if "w_h" in p}  # min cells have no W_h
