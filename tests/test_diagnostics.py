"""`diagnostics.tree_norm`: the gradient norm the trainer logs and stops on.

It must equal the plain 2-norm over all leaves, stay finite where the plain float32 norm
overflows although every entry is finite, and be non-finite exactly when an entry is.
"""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_research.training.diagnostics import tree_norm


def test_equals_the_plain_norm():
  rng = np.random.default_rng(0)
  tree = {"a": rng.normal(size=(3, 4)).astype(np.float32),
          "b": {"c": rng.normal(size=5).astype(np.float32)}}
  flat = np.concatenate([tree["a"].ravel(), tree["b"]["c"]]).astype(np.float64)
  np.testing.assert_allclose(float(tree_norm(tree)), np.linalg.norm(flat), rtol=1e-6)


def test_huge_finite_entries_stay_finite():
  tree = {"w": jnp.array([3e20, 4e20], jnp.float32)}
  assert not np.isfinite(float(optax.tree.norm(tree)))  # the overflow this guards against
  np.testing.assert_allclose(float(tree_norm(tree)), 5e20, rtol=1e-6)


def test_zero_tree_is_zero():
  assert float(tree_norm({"w": jnp.zeros(3), "b": jnp.zeros((2, 2))})) == 0.0


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_entry_gives_non_finite_norm(bad):
  assert not np.isfinite(float(tree_norm({"w": jnp.array([1.0, bad]), "b": jnp.ones(2)})))


def test_layer_norms_and_the_ratio_of_the_first_to_the_last_layer():
  """Per-layer gradient norms, and with two layers or more ||dL/dθ_0|| / ||dL/dθ_{L-1}||."""
  from rnn_research.training.diagnostics import layer_grad_norms

  grads = {"layers": {0: {"w": jnp.full((3,), 2.0)}, 1: {"w": jnp.ones((2,))},
                      2: {"w": jnp.full((4,), 0.5)}}, "readout": {"w": jnp.ones((1,))}}
  norms = layer_grad_norms(grads)
  np.testing.assert_allclose(norms["grad/layer_0"], np.sqrt(12.0), rtol=1e-6)
  np.testing.assert_allclose(norms["grad/ratio_first_last_layer"], np.sqrt(12.0) / 1.0,
                             rtol=1e-6)
  assert "grad/ratio_first_last_layer" not in layer_grad_norms({"layers": {0: {"w": jnp.ones(2)}}})
