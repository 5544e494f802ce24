"""proj_size (LSTMP, Sak et al. 2014): h_t = (o ⊙ σ(c_t)) W_p, W_h [P, 4H], h [B, P], c [B, H].

Parity with torch's `nn.LSTM(proj_size=...)` is in tests/test_interop.py; composition with the
other axes in tests/test_composition.py (the LSTMP rows of EXTRA)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models

import param_noise

B, T, F, H, P = 3, 6, 4, 5, 2


def build(**overrides):
  cfg = {"cell": "lstm", "hidden_size": H, "proj_size": P, **overrides}
  return param_noise.perturb(models.build(cfg, F, 1, nnx.Rngs(0)), 0.3)


def inputs(seed: int = 0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(B, T, F)), jnp.float32)


def test_shapes_and_the_projection_equation():
  """The carry holds h [B, P] and c [B, H]; h_t is o ⊙ tanh(c_t) projected by W_p, and it is
  h_t [B, P] that enters W_h at the next step and the next layer."""
  model = build(num_layers=2)
  layer = model.layers[0]
  assert layer.w_h.shape == (P, 4 * H) and layer.w_p.shape == (H, P)
  assert model.layers[1].w_x.shape == (P, 4 * H)
  xs = inputs()
  state = model.initial_state(B)
  for t in range(2):
    prev = state[0]
    state, _ = model.step(state, xs[:, t])
    z = xs[:, t] @ layer.w_x[...] + layer.b[...] + prev.h @ layer.w_h[...]
    i, f, g, o = (jax.nn.sigmoid(z[:, k * H:(k + 1) * H]) for k in range(4))
    c = f * prev.c + i * jnp.tanh(z[:, 2 * H:3 * H])
    np.testing.assert_allclose(state[0].c, c, atol=1e-6)
    np.testing.assert_allclose(state[0].h, (o * jnp.tanh(c)) @ layer.w_p[...], atol=1e-6)
  assert state[0].h.shape == (B, P) and state[0].c.shape == (B, H)


@pytest.mark.parametrize("engine", ["scan_hoisted", "vjp", "vjp_hoisted"])
def test_every_engine_gives_the_gradients_of_plain_autodiff(engine):
  """Two layers, a mask, resets and a learned initial state: the same outputs and gradients
  as engine='scan' (plain autodiff), with and without remat. The cell's own backward is off."""
  xs = inputs(1)
  mask = jnp.arange(T)[None, :] < jnp.asarray([T, 4, 2])[:, None]
  resets = jnp.zeros((B, T), bool).at[0, 3].set(True)

  def grads(engine, remat=False):
    model = build(num_layers=2, engine=engine, remat=remat, learned_initial_state=True)
    assert not model.layers[0].analytic_backward()
    return nnx.grad(lambda m, x: jnp.sum(jnp.sin(m(x, mask, resets=resets))),
                    argnums=(0, 1))(model, xs)

  want = grads("scan")
  for remat in (False, True):
    for a, b in zip(jax.tree.leaves(grads(engine, remat)), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_streaming_equals_the_full_sequence():
  model = build(num_layers=2, horizontal_skip="residual", skip_span=2)
  xs = inputs(2)
  full = model(xs)
  state, steps = model.initial_state(B), []
  for t in range(T):
    state, y = model.step(state, xs[:, t])
    steps.append(y)
  np.testing.assert_allclose(jnp.stack(steps, axis=1), full, atol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    (dict(cell="gru"), "defined for cell='lstm' only"),
    (dict(proj_size=H), "must be smaller than hidden_size=5"),
    (dict(proj_size=-1), "proj_size must be 0 .off. or a positive width"),
])
def test_bad_values_are_refused_with_the_reason(overrides, message):
  with pytest.raises(ValueError, match=message):
    models.build({"cell": "lstm", "hidden_size": H, "proj_size": P, **overrides}, F, 1,
                  nnx.Rngs(0))
