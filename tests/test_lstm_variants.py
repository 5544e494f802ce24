"""Each LSTM variant's defining property, checked on `cell.pointwise` against gates recomputed
from the pre-activations z (Greff et al. 2017 variants, and the lecture's eq. 13.3-13.6)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.core.carry import Carry
from rnn_research.core.cells import CELLS, LSTM_VARIANTS
from rnn_research.core.models import build_cells
from rnn_research.core.spec import resolve

B, F, H = 2, 3, 3
TOL = dict(atol=1e-6, rtol=1e-6)
sigmoid, tanh = jax.nn.sigmoid, jnp.tanh


def make(variant: str, **overrides):
  spec = resolve({"cell": "lstm", "hidden_size": H, "lstm_variant": variant, **overrides})
  return build_cells(spec, F, nnx.Rngs(0))[0]


def inputs(cell, seed: int = 0):
  """Pre-activations z [B, G*H] (wide range, so every gate is far from constant) and a carry
  with non-zero h, c (and [i, f, o]_{t-1} for fgr)."""
  rng = np.random.default_rng(seed)
  z = jnp.asarray(2.0 * rng.normal(size=(B, cell.w_x.shape[1])), jnp.float32)
  carry = tuple(jnp.asarray(rng.uniform(-1.0, 1.0, size=c.shape), jnp.float32)
                for c in jax.tree.leaves(cell.initial_carry(B)))
  return z, carry


def blocks(cell, z):
  """{gate name: z block} in the variant's gate order."""
  gates = cell.variant.gates
  assert z.shape[-1] == len(gates) * H
  return {g: z[..., k * H:(k + 1) * H] for k, g in enumerate(gates)}


def run(cell, z, carry, pw=None):
  """The cell's pointwise step on carry (h, c[, gates]) -> ((h, c[, gates]), y)."""
  pw = cell.weights()["pw"] if pw is None else pw
  new, y = cell.pointwise(pw, z, z, Carry(*carry))
  return tuple(jax.tree.leaves(new)), y


def peep(cell):
  """{gate: p_gate [H]} of a peephole variant."""
  return dict(zip(cell._gated, cell.peep[...]))


@pytest.mark.parametrize("variant,gates", [
    ("standard", "ifgo"), ("np", "ifgo"), ("peephole", "ifgo"), ("fgr", "ifgo"),
    ("niaf", "ifgo"), ("noaf", "ifgo"), ("nig", "fgo"), ("nfg", "igo"), ("nog", "ifg"),
    ("cifg", "fgo"), ("lecture", "fgo"),
])
def test_gate_blocks(variant, gates):
  cell = make(variant)
  assert cell.variant.gates == tuple(gates)
  assert cell.w_x.shape == (F, len(gates) * H)
  assert cell.w_h.shape == (H, len(gates) * H)
  assert cell.b.shape == (len(gates) * H,)
  assert set(LSTM_VARIANTS.names()) >= {variant}


def test_standard_equations():
  cell = make("standard")
  z, (h, c) = inputs(cell)
  zb = blocks(cell, z)
  (h1, c1), y = run(cell, z, (h, c))
  i, f, g, o = sigmoid(zb["i"]), sigmoid(zb["f"]), tanh(zb["g"]), sigmoid(zb["o"])
  np.testing.assert_allclose(c1, f * c + i * g, **TOL)
  np.testing.assert_allclose(h1, o * tanh(c1), **TOL)
  np.testing.assert_array_equal(y, h1)


def test_nfg_forget_gate_is_one():
  cell = make("nfg")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  (h1, c1), _ = run(cell, z, (h, c))
  i = sigmoid(zb["i"] + p["i"] * c)
  np.testing.assert_allclose(c1, c + i * tanh(zb["g"]), **TOL)
  np.testing.assert_allclose(h1, sigmoid(zb["o"] + p["o"] * c1) * tanh(c1), **TOL)


def test_nig_input_gate_is_one():
  cell = make("nig")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  (_, c1), _ = run(cell, z, (h, c))
  f = sigmoid(zb["f"] + p["f"] * c)
  np.testing.assert_allclose(c1, f * c + tanh(zb["g"]), **TOL)


def test_nog_output_gate_is_one():
  cell = make("nog")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  (h1, c1), _ = run(cell, z, (h, c))
  i, f = sigmoid(zb["i"] + p["i"] * c), sigmoid(zb["f"] + p["f"] * c)
  np.testing.assert_allclose(c1, f * c + i * tanh(zb["g"]), **TOL)
  np.testing.assert_allclose(h1, tanh(c1), **TOL)


def test_cifg_input_gate_is_one_minus_forget():
  cell = make("cifg")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  (h1, c1), _ = run(cell, z, (h, c))
  f = sigmoid(zb["f"] + p["f"] * c)
  np.testing.assert_allclose(c1, f * c + (1.0 - f) * tanh(zb["g"]), **TOL)
  np.testing.assert_allclose(h1, sigmoid(zb["o"] + p["o"] * c1) * tanh(c1), **TOL)


def test_niaf_cell_input_is_linear():
  cell = make("niaf")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  (_, c1), _ = run(cell, z, (h, c))
  i, f = sigmoid(zb["i"] + p["i"] * c), sigmoid(zb["f"] + p["f"] * c)
  np.testing.assert_allclose(c1, f * c + i * zb["g"], **TOL)
  # g is unbounded: a large z_g moves c past what tanh(z_g) could.
  big = z.at[:, 2 * H:3 * H].set(50.0)
  (_, c_big), _ = run(cell, big, (h, c))
  assert float(jnp.abs(c_big).max()) > 5.0


def test_noaf_output_is_linear_in_c():
  cell = make("noaf")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  (h1, c1), _ = run(cell, z, (h, c))
  np.testing.assert_allclose(h1, sigmoid(zb["o"] + p["o"] * c1) * c1, **TOL)


def test_np_equals_standard_exactly():
  std, np_ = make("standard"), make("np")
  for name in ("w_x", "w_h", "b"):
    np.testing.assert_array_equal(getattr(std, name)[...], getattr(np_, name)[...])
  z, carry = inputs(std)
  out_std, out_np = run(std, z, carry), run(np_, z, carry)
  for a, b in zip(jax.tree.leaves(out_std), jax.tree.leaves(out_np)):
    np.testing.assert_array_equal(a, b)
  xs = jnp.asarray(np.random.default_rng(1).normal(size=(B, 4, F)), jnp.float32)
  cfg = dict(cell="lstm", hidden_size=H)
  ys_std = models.build(cfg, F, 2, rngs=nnx.Rngs(0))(xs)
  ys_np = models.build(dict(cfg, lstm_variant="np"), F, 2, rngs=nnx.Rngs(0))(xs)
  np.testing.assert_array_equal(ys_std, ys_np)


def test_peephole_equations_and_effect():
  cell, std = make("peephole"), make("standard")
  z, (h, c) = inputs(cell)
  zb, p = blocks(cell, z), peep(cell)
  assert set(p) == {"i", "f", "o"}
  assert float(jnp.abs(cell.peep[...]).max()) > 0.0
  (h1, c1), _ = run(cell, z, (h, c))
  i, f = sigmoid(zb["i"] + p["i"] * c), sigmoid(zb["f"] + p["f"] * c)
  np.testing.assert_allclose(c1, f * c + i * tanh(zb["g"]), **TOL)
  np.testing.assert_allclose(h1, sigmoid(zb["o"] + p["o"] * c1) * tanh(c1), **TOL)
  # Zero peepholes: exactly the standard LSTM.
  zero = {"peep": jnp.zeros_like(cell.peep[...])}
  out_zero, out_std = run(cell, z, (h, c), zero), run(std, z, (h, c))
  for a, b in zip(jax.tree.leaves(out_zero), jax.tree.leaves(out_std)):
    np.testing.assert_array_equal(a, b)
  # Changing the peephole weights changes the output.
  (_, _), y_other = run(cell, z, (h, c), {"peep": cell.peep[...] + 1.0})
  assert float(jnp.abs(y_other - h1).max()) > 1e-3


def test_fgr_carry_holds_previous_gates():
  cell = make("fgr")
  assert cell.carry_fields() == {"h": H, "c": H, "gates": 3 * H}
  z, carry = inputs(cell)
  assert len(carry) == 3 and carry[2].shape == (B, 3 * H)
  pw = cell.weights()["pw"]
  assert set(pw) == {"peep", "w_gates"} and pw["w_gates"].shape == (3 * H, 3 * H)
  (h1, c1, gates), y = run(cell, z, carry)
  c = carry[1]
  zb, p = blocks(cell, z), peep(cell)
  fed = carry[2] @ pw["w_gates"]
  i = sigmoid(zb["i"] + fed[:, :H] + p["i"] * c)
  f = sigmoid(zb["f"] + fed[:, H:2 * H] + p["f"] * c)
  np.testing.assert_allclose(c1, f * c + i * tanh(zb["g"]), **TOL)
  o = sigmoid(zb["o"] + fed[:, 2 * H:] + p["o"] * c1)
  np.testing.assert_allclose(h1, o * tanh(c1), **TOL)
  np.testing.assert_allclose(gates, jnp.concatenate([i, f, o], axis=-1), **TOL)
  # w_gates matters; with w_gates = 0 fgr is the peephole LSTM.
  other = dict(pw, w_gates=pw["w_gates"] + 0.5)
  _, y_other = run(cell, z, carry, other)
  assert float(jnp.abs(y_other - y).max()) > 1e-3
  no_fgr = dict(pw, w_gates=jnp.zeros_like(pw["w_gates"]))
  (h_nf, c_nf, _), _ = run(cell, z, carry, no_fgr)
  peephole = make("peephole")
  (h_p, c_p), _ = run(peephole, z, carry[:2], {"peep": pw["peep"]})
  np.testing.assert_allclose(h_nf, h_p, **TOL)
  np.testing.assert_allclose(c_nf, c_p, **TOL)


def test_lecture_equations():
  cell = make("lecture")
  assert not cell.lecture_peephole and cell.weights()["pw"] == {}
  z, (h, c) = inputs(cell)
  zb = blocks(cell, z)
  (h1, c1), _ = run(cell, z, (h, c))
  f = sigmoid(zb["f"])
  np.testing.assert_allclose(c1, f * c + (1.0 - f) * tanh(zb["g"]), **TOL)  # eq. 13.3
  np.testing.assert_allclose(h1, sigmoid(zb["o"]) * tanh(c1), **TOL)  # eq. 13.6


def test_lecture_peephole_stop_gradient():
  cell = make("lecture", lecture_peephole=True)
  pw = cell.weights()["pw"]
  assert set(pw) == {"w_c"} and pw["w_c"].shape == (H, 3 * H)
  z, (h, c) = inputs(cell)
  (h1, c1), _ = run(cell, z, (h, c))
  # Forward: c*_{t-1} W_c enters f, g and o (eq. 13.4, 13.5).
  zc = blocks(cell, z + c @ pw["w_c"])
  f = sigmoid(zc["f"])
  np.testing.assert_allclose(c1, f * c + (1.0 - f) * tanh(zc["g"]), **TOL)
  np.testing.assert_allclose(h1, sigmoid(zc["o"]) * tanh(c1), **TOL)
  (_, c_plain), _ = run(cell, z, (h, c), {"w_c": jnp.zeros_like(pw["w_c"])})
  assert float(jnp.abs(c_plain - c1).max()) > 1e-3

  # Backward: d c_t / d c_{t-1} is diag(f) exactly; the c* path contributes nothing.
  def new_c(c_prev):
    return cell.pointwise(pw, z, z, Carry(h, c_prev))[0].c

  jac = jax.jacobian(new_c)(c)  # [B, H, B, H]
  expected = jnp.einsum("bi,bc,ij->bicj", f, jnp.eye(B), jnp.eye(H))
  np.testing.assert_array_equal(jac, expected)
  # (Without the stop-gradient the same forward would have a different Jacobian.)
  def new_c_no_stop(c_prev):
    zb = blocks(cell, z + c_prev @ pw["w_c"])
    f = sigmoid(zb["f"])
    return f * c_prev + (1.0 - f) * tanh(zb["g"])

  np.testing.assert_allclose(new_c_no_stop(c), c1, **TOL)
  assert float(jnp.abs(jax.jacobian(new_c_no_stop)(c) - expected).max()) > 1e-3

  # ... while W_c still learns.
  def loss(w_c):
    (h1, c1, *_), _ = cell.pointwise({"w_c": w_c}, z, z, Carry(h, c))
    return jnp.sum(h1) + jnp.sum(c1)

  grad = jax.grad(loss)(pw["w_c"])
  assert float(jnp.abs(grad).max()) > 1e-3
  assert bool(jnp.all(jnp.any(grad != 0.0, axis=0)))  # every gate column gets a gradient


def test_lecture_without_peephole_has_no_w_c():
  assert not hasattr(make("lecture"), "w_c")
  assert "w_c" not in nnx.state(make("lecture"), nnx.Param)


@pytest.mark.parametrize("forget_bias", [1.0, 0.5])
@pytest.mark.parametrize("variant", sorted(set(LSTM_VARIANTS.names())))
def test_forget_bias_init(variant, forget_bias):
  cell = make(variant, forget_bias=forget_bias)
  b = np.asarray(cell.b[...])
  gates = cell.variant.gates
  for k, g in enumerate(gates):
    want = forget_bias if g == "f" else 0.0
    np.testing.assert_array_equal(b[k * H:(k + 1) * H], want, err_msg=f"{variant} {g}")


def test_forget_bias_default_is_one():
  assert resolve({}).forget_bias == 1.0
  b = np.asarray(make("standard").b[...])
  np.testing.assert_array_equal(b[H:2 * H], 1.0)
  np.testing.assert_array_equal(np.delete(b, np.s_[H:2 * H]), 0.0)
