"""engine='cudnn' (`core/cudnn.py`) on CPU: the kernel is `cudnn.lstm_reference`, jax's plain-JAX
`lstm_ref` reading our packed weights through `unpack_lstm_weights`, so every test below also
checks the packing. Outputs, final state and gradients must equal our own stack's (engine='scan').
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import rnn

from rnn_research.core import cudnn, models
from rnn_research.core.spec import ModelSpec
from tests.param_noise import perturb

B, T, F, H = 3, 4, 3, 2
TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)
run_ref = functools.partial(cudnn.run_stack, hidden_size=H, kernel=cudnn.lstm_reference)


def build(layers: int, **overrides) -> models.RecurrentStack:
  config = dict(cell="lstm", num_layers=layers, hidden_size=H, engine="scan", **overrides)
  return perturb(models.build(config, F, None, nnx.Rngs(0)), 0.3)


def weights(model: models.RecurrentStack) -> list[dict]:
  return [cell.weights() for cell in model.layers]


def inputs(masked: bool):
  """xs [B, T, F], a random initial state and a prefix mask [B, T] of lengths T, 2, 0."""
  rng = np.random.default_rng(1)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = jnp.arange(T)[None, :] < jnp.asarray([T, 2, 0])[:, None] if masked else None
  return xs, mask, rng


def random_state(model, rng):
  return jax.tree.map(lambda a: jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype),
                      model.initial_state(B))


def ours(model, xs, mask, state):
  return model(xs, mask, state=state, return_state=True)


def theirs(model, xs, mask, state):
  ys, final = run_ref(weights(model), jnp.swapaxes(xs, 0, 1),
                      None if mask is None else mask.T, state)
  return jnp.swapaxes(ys, 0, 1), final


@pytest.mark.parametrize("layers", [1, 3])
def test_pack_round_trip(layers):
  w = weights(build(layers))
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(cudnn.pack(w, F, H), F, H, layers, False)
  assert cudnn.pack(w, F, H).shape == (rnn.get_num_params_in_lstm(F, H, layers, False),)
  for l, layer in enumerate(w):
    np.testing.assert_array_equal(w_ih[l], layer["w_x"].T)
    np.testing.assert_array_equal(w_hh[l], layer["w_h"].T)
    np.testing.assert_array_equal(b_ih[l], layer["b"])
    np.testing.assert_array_equal(b_hh[l], np.zeros(4 * H))


def test_pack_refuses_extra_parameters():
  w = weights(build(1, lstm_variant="peephole"))
  with pytest.raises(ValueError, match="peep"):
    cudnn.pack(w, F, H)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_values_and_final_state(layers, masked):
  model = build(layers)
  xs, mask, rng = inputs(masked)
  state = random_state(model, rng)
  (ys, final), (ys_ref, final_ref) = ours(model, xs, mask, state), theirs(model, xs, mask, state)
  np.testing.assert_allclose(ys_ref, ys, **TOL)
  for got, want in zip(final_ref, final):
    np.testing.assert_allclose(got.h, want.h, **TOL)
    np.testing.assert_allclose(got.c, want.c, **TOL)


@pytest.mark.parametrize("layers", [1, 2])
def test_gradients(layers):
  model = build(layers, learned_initial_state=True)
  graphdef, params = nnx.split(model)
  xs, mask, rng = inputs(True)
  probe = jnp.asarray(rng.normal(size=(B, T, H)), jnp.float32)

  def loss(run, params):
    model = nnx.merge(graphdef, params)
    ys, final = run(model, xs, mask, None if run is ours else model.initial_state(B))
    return jnp.sum(ys * probe) + sum(jnp.sum(c.h ** 2) + jnp.sum(jnp.sin(c.c)) for c in final)

  want = jax.grad(functools.partial(loss, ours))(params)
  got = jax.grad(functools.partial(loss, theirs))(params)
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, **GRAD_TOL), got, want)


def test_traced_mask_holes_read_as_lengths():
  model = build(1)
  xs, _, rng = inputs(False)
  state = random_state(model, rng)
  holes = jnp.asarray([[True, False, True, True], [False, True, False, False],
                       [False] * T]).T
  prefix = jnp.arange(T)[:, None] < jnp.asarray([3, 1, 0])[None, :]
  run = jax.jit(lambda m: run_ref(weights(model), jnp.swapaxes(xs, 0, 1), m, state))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), run(holes), run(prefix))


def test_mask_with_hole_raises():
  model = build(1)
  xs, _, _ = inputs(False)
  holes = jnp.ones((T, B), bool).at[1, 0].set(False)
  with pytest.raises(ValueError, match="hole"):
    run_ref(weights(model), jnp.swapaxes(xs, 0, 1), holes, model.initial_state(B))


def test_resets_raise():
  model = build(1)
  xs, _, _ = inputs(False)
  with pytest.raises(ValueError, match="resets"):
    run_ref(weights(model), jnp.swapaxes(xs, 0, 1), None, model.initial_state(B),
            resets=jnp.zeros((T, B), bool))


REFUSED = {
    "cell": dict(cell="gru"),
    "lstm_variant": dict(lstm_variant="peephole"),
    "lstm_variant=": dict(lstm_variant="lecture", lecture_peephole=True),
    "activation": dict(activation="relu"),
    "proj_size": dict(hidden_size=4, proj_size=2),
    "norm": dict(norm="layer"),
    "norm=": dict(norm="layer_per_step"),
    "horizontal_skip": dict(horizontal_skip="residual"),
    "vertical_skip": dict(num_layers=2, vertical_skip="residual"),
    "dropout": dict(dropout=0.1),
    "recurrent_dropout": dict(recurrent_dropout=0.1),
    "bidirectional": dict(bidirectional="concat"),
    "remat": dict(remat=True),
    "execution": dict(execution="time_major"),
}


@pytest.mark.parametrize("key", REFUSED)
def test_refusal_names_the_key(key):
  spec = ModelSpec.from_config({"cell": "lstm", **REFUSED[key]})
  reason = cudnn.refusal(spec, "gpu")
  assert reason is not None and f"{key.rstrip('=')}=" in reason and "engine='auto'" in reason


@pytest.mark.parametrize("overrides", [{}, dict(num_layers=3, learned_initial_state=True,
                                                forget_bias=0.0)])
def test_refusal_accepts_the_plain_lstm_on_gpu(overrides):
  spec = ModelSpec.from_config(dict(cell="lstm", **overrides))
  assert cudnn.refusal(spec, "gpu") is None and cudnn.refusal(spec, "cuda") is None
  assert "GPU" in cudnn.refusal(spec, "cpu")


@pytest.mark.skipif(jax.default_backend() in ("gpu", "cuda"), reason="the CPU's refusal")
def test_off_a_gpu_the_model_builds_and_streams_but_a_call_is_refused():
  """The design is checked at build (a sweep's check and loading a run to sample from it build
  the model on a CPU); the backend where the kernel runs: the full call raises with the reason,
  while `model.step`, which never uses the kernel, streams."""
  model = models.build(dict(cell="lstm", num_layers=2, hidden_size=H, engine="cudnn"), F, None,
                       nnx.Rngs(0))
  xs, _, _ = inputs(False)
  with pytest.raises(ValueError, match="cuDNN runs on NVIDIA GPUs only.*engine='auto'"):
    model(xs)
  state, y = model.step(model.initial_state(B), xs[:, 0])
  assert y.shape == (B, H)
  with pytest.raises(ValueError, match="proj_size"):  # a design the kernel cannot run: at build
    models.build(dict(cell="lstm", hidden_size=4, proj_size=2, engine="cudnn"), F, None,
                 nnx.Rngs(0))
