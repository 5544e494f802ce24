"""Mixed precision: `model.dtype` (the projections' compute dtype) and `model.param_dtype`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import cudnn, models
from rnn_research.core.spec import ModelSpec

B, T, F, H = 4, 9, 3, 8


def build(**overrides):
  cfg = {"cell": "lstm", "hidden_size": H, "num_layers": 2, **overrides}
  return models.build(cfg, F, 1, nnx.Rngs(0))


def inputs():
  return jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)


def relative(a, b) -> float:
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("engine", ["scan", "vjp"])
def test_bfloat16_projections_accumulate_in_float32(engine):
  """Both projections' operands are bfloat16, their products float32; the carry, the outputs
  and the parameters stay float32."""
  model = build(dtype="bfloat16", engine=engine)
  graphdef, params = nnx.split(model)
  hlo = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x)).lower(params, inputs()).as_text()
  dots = [line.split(" : ")[-1] for line in hlo.splitlines() if "dot_general" in line]
  projections = [d for d in dots if "bf16" in d]  # x W_x and h W_h of the 2 layers
  assert len(projections) >= 4 and len(dots) - len(projections) == 1  # + the readout
  assert all(d.count("xbf16>") == 2 and d.endswith("xf32>") for d in projections)
  ys, state = model(inputs(), return_state=True)
  assert ys.dtype == jnp.float32
  assert {a.dtype for a in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}
  assert {a.dtype for a in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
      jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "min_gru"])
def test_bfloat16_is_float32_to_bfloat16_accuracy(cell):
  """Outputs and every engine's gradients within a few bfloat16 ulps (2^-8) of float32."""
  xs = inputs()
  loss = lambda m: jnp.sum(jnp.sin(m(xs)))
  reference = nnx.value_and_grad(loss)(build(cell=cell))
  for engine in ("scan", "vjp_hoisted"):
    got = nnx.value_and_grad(loss)(build(cell=cell, dtype="bfloat16", engine=engine))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(reference)):
      assert a.dtype == b.dtype
      assert relative(a, b) < 3e-2, engine
    assert relative(got[0], reference[0]) > 0  # it did compute in bfloat16


def test_param_dtype_stores_every_parameter_in_it():
  model = build(param_dtype="bfloat16")
  assert {a.dtype for a in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
      jnp.dtype(jnp.bfloat16)}
  assert model(inputs()).dtype == jnp.float32


def test_bad_dtypes_are_refused():
  with pytest.raises(ValueError, match="unknown dtype 'float64'; valid choices: float32, "
                                       "bfloat16, float16"):
    build(dtype="float64")
  reason = cudnn.refusal(ModelSpec(dtype="bfloat16"), "gpu")
  assert "dtype='bfloat16'" in reason and "float32 only" in reason
