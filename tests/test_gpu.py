"""What needs an NVIDIA GPU: the cuDNN engine against the scan, and the GPU's default engine
against plain autodiff, each at a stated tolerance. Skipped elsewhere (scripts/gpu_check.sh runs
it on a GPU machine).

float32 matmuls on NVIDIA GPUs default to TF32 (10-bit mantissa): under
`jax.default_matmul_precision("highest")` the engines agree to float32 tolerance, under the
default to TF32's (about 1e-3 relative per product, a few 1e-3 through a short sequence).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from tests.param_noise import perturb

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu",
                                reason="needs an NVIDIA GPU (scripts/gpu_check.sh)")

B, T, F, H = 8, 16, 5, 32
TOLERANCE = {"highest": 2e-5, "default": 2e-2}  # relative, of outputs and gradients


def run(engine: str, layers: int, masked: bool):
  model = perturb(models.build(dict(cell="lstm", num_layers=layers, hidden_size=H,
                                    engine=engine, learned_initial_state=True), F, 1,
                               nnx.Rngs(0)), 0.3)
  rng = np.random.default_rng(1)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = (jnp.arange(T)[None, :] < jnp.asarray(rng.integers(1, T + 1, size=B))[:, None]
          if masked else None)

  def loss(m):
    ys, state = m(xs, mask, return_state=True)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(state))

  return nnx.value_and_grad(loss)(model)


def assert_relative(got, want, tol: float):
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert float(jnp.linalg.norm(a - b)) <= tol * float(jnp.linalg.norm(b)) + 1e-6


@pytest.mark.parametrize("precision", ["highest", "default"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_cudnn_equals_the_scan(layers, masked, precision):
  with jax.default_matmul_precision(precision):
    assert_relative(run("cudnn", layers, masked), run("scan", layers, masked),
                    TOLERANCE[precision])


@pytest.mark.parametrize("engine", ["auto", "vjp_hoisted", "vjp"])
def test_gpu_engines_equal_plain_autodiff(engine):
  with jax.default_matmul_precision("highest"):
    assert_relative(run(engine, 2, True), run("scan", 2, True), TOLERANCE["highest"])
