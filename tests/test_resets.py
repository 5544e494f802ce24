"""Episode resets (`resets` [B, T], config.model.resets) and task packing (config.task.pack).

A reset at t restarts every layer's carry from its initial state (zeros or learned), so the
outputs from t on are those of a fresh call on the sequence from t; streaming agrees; padding
and `config.model.resets=False` ignore resets; the custom-VJP engines' gradients (incl. the
learned initial state's) equal plain autodiff; a packed training row equals its episodes.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.tasks import TASKS

import param_noise

B, T, F, H, O = 4, 8, 3, 4, 2
TOL = dict(atol=1e-5, rtol=1e-5)
CELLS = ("lstm", "gru", "rnn")
# Row 0: a reset at 3; row 1: at 5; row 2: at 2 and 5; row 3: none.
RESETS = np.zeros((B, T), bool)
RESETS[0, 3] = RESETS[1, 5] = RESETS[2, 2] = RESETS[2, 5] = True


def perturb(model, seed: int = 5):
  return param_noise.perturb(model, 0.3, seed)


def build(cell: str, *, out=O, in_features=F, **cfg):
  c = dict(cell=cell, hidden_size=H, num_layers=2, engine="scan")
  c.update(cfg)
  return perturb(models.build(c, in_features=in_features, out_features=out, rngs=nnx.Rngs(0)))


def data(seed: int = 42):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)


def caller(model):
  """The jitted full call (xs, mask, resets) -> (ys, final state); compiled once per
  signature, so the comparisons below share one compile."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def call(params, xs, mask, resets):
    return nnx.merge(graphdef, params, rest)(xs, mask, resets=resets, return_state=True)

  return functools.partial(call, params)


def stream(model, xs, mask=None, resets=None, state=None):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  step = jax.jit(lambda p, s, x, m, r: nnx.merge(graphdef, p, rest).step(s, x, m, r))
  state = model.initial_state(xs.shape[0]) if state is None else state
  ys = []
  for t in range(xs.shape[1]):
    state, y = step(params, state, xs[:, t], None if mask is None else mask[:, t],
                    None if resets is None else resets[:, t])
    ys.append(y)
  return jnp.stack(ys, axis=1), state


def shifted(xs, starts, stops=None):
  """Row b of the result is xs[rows[b], start:stop] moved to t = 0, padded after (mask)."""
  out = np.zeros(xs.shape, np.float32)
  mask = np.zeros(xs.shape[:2], bool)
  for b, (row, start) in enumerate(starts):
    stop = T if stops is None or stops[b] is None else stops[b]
    out[b, :stop - start] = np.asarray(xs[row, start:stop])
    mask[b, :stop - start] = True
  return jnp.asarray(out), jnp.asarray(mask)


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


VARIANTS = {f"{cell}-{engine}-{'learned' if learned else 'zeros'}":
            dict(cell=cell, engine=engine, learned_initial_state=learned)
            for cell in CELLS for engine in ("scan", "vjp") for learned in (False, True)}
VARIANTS.update({f"{cell}-skip-learned": dict(cell=cell, engine="vjp", learned_initial_state=True,
                                              horizontal_skip="residual", skip_span=2)
                 for cell in CELLS})
VARIANTS.update({f"{cell}-time_major-learned": dict(cell=cell, execution="time_major",
                                                    learned_initial_state=True)
                 for cell in ("lstm", "gru")})
VARIANTS["lstm-vjp_hoisted-residual-learned"] = dict(cell="lstm", engine="vjp_hoisted",
                                                     vertical_skip="residual",
                                                     learned_initial_state=True)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_reset_restarts_from_the_initial_state(name):
  model = build(**VARIANTS[name])
  call = caller(model)
  xs, ones = data(), jnp.ones((B, T), bool)
  ys, _ = call(xs, ones, jnp.asarray(RESETS))
  plain, _ = call(xs, ones, jnp.zeros((B, T), bool))
  # Fresh calls on x[0, 3:], x[1, 5:], x[2, 5:] and x[2, 2:5], each from t = 0.
  fresh_xs, fresh_mask = shifted(xs, [(0, 3), (1, 5), (2, 5), (2, 2)], [None, None, None, 5])
  fresh, _ = call(fresh_xs, fresh_mask, jnp.zeros((B, T), bool))
  ys, plain, fresh = map(np.asarray, (ys, plain, fresh))
  np.testing.assert_allclose(ys[0, 3:], fresh[0, :T - 3], **TOL)
  np.testing.assert_allclose(ys[1, 5:], fresh[1, :T - 5], **TOL)
  np.testing.assert_allclose(ys[2, 5:], fresh[2, :T - 5], **TOL)
  np.testing.assert_allclose(ys[2, 2:5], fresh[3, :3], **TOL)
  # Before its first reset a row is untouched; a row without resets is the plain call.
  for b, first in enumerate((3, 5, 2, T)):
    np.testing.assert_allclose(ys[b, :first], plain[b, :first], **TOL)
  # The reset really changed something.
  for b, first in enumerate((3, 5, 2)):
    assert np.abs(ys[b, first:] - plain[b, first:]).max() > 1e-4, b


@pytest.mark.parametrize("cell", CELLS)
def test_no_resets_equals_all_false_and_reset_at_zero_drops_the_given_state(cell):
  model = build(cell, learned_initial_state=True)
  xs = data()
  ys = model(xs)
  np.testing.assert_allclose(model(xs, resets=jnp.zeros((B, T), bool)), ys, **TOL)
  state = jax.tree.map(lambda a: a + 0.7, model.initial_state(B))
  first = jnp.zeros((B, T), bool).at[:, 0].set(True)
  np.testing.assert_allclose(model(xs, state=state, resets=first), ys, **TOL)
  assert float(jnp.abs(model(xs, state=state) - ys).max()) > 1e-3


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_streaming_with_reset_t_equals_full_call(cell, learned):
  model = build(cell, learned_initial_state=learned)
  xs = data()
  mask = jnp.arange(T)[None, :] < jnp.asarray([T, 7, 4, T])[:, None]
  resets = jnp.asarray(RESETS)
  ys, final = model(xs, mask, resets=resets, return_state=True)
  streamed, state = stream(model, xs, mask, resets)
  np.testing.assert_allclose(streamed, ys, **TOL)
  assert_trees_close(state, final)


@pytest.mark.parametrize("engine", ["scan", "vjp", "time_major"])
@pytest.mark.parametrize("cell", CELLS)
def test_resets_at_padded_positions_are_ignored(cell, engine):
  kw = dict(execution="time_major") if engine == "time_major" else dict(engine=engine)
  model = build(cell, learned_initial_state=True, **kw)
  call = caller(model)
  xs = data()
  mask = np.ones((B, T), bool)
  mask[0, 6:] = False          # padded at the end
  mask[1, 2:4] = False         # a hole
  mask[2, :] = False           # all padding
  mask[3, 0] = False           # padding first
  valid = jnp.asarray(RESETS)
  extra = RESETS.copy()
  extra[0, 6] = extra[0, 7] = extra[1, 2] = extra[1, 3] = extra[2, 4] = extra[3, 0] = True
  assert np.all(~mask[extra & ~RESETS])  # the extra resets are all at padding
  ys, final = call(xs, jnp.asarray(mask), valid)
  got, got_final = call(xs, jnp.asarray(mask), jnp.asarray(extra))
  np.testing.assert_allclose(got, ys, **TOL)
  assert_trees_close(got_final, final)


@pytest.mark.parametrize("cell", CELLS)
def test_config_resets_false_ignores_resets(cell):
  xs = data()
  off = build(cell, resets=False, learned_initial_state=True)
  on = build(cell, learned_initial_state=True)
  resets = jnp.asarray(RESETS)
  ys = off(xs)
  np.testing.assert_array_equal(off(xs, resets=resets), ys)
  np.testing.assert_array_equal(on(xs), ys)  # same weights
  assert float(jnp.abs(on(xs, resets=resets) - ys).max()) > 1e-3
  streamed, _ = stream(off, xs, resets=resets)
  np.testing.assert_allclose(streamed, ys, **TOL)


def loss_grads(model, xs, mask, resets, state=None):
  """d/d(params, xs, state) of a weighted sum of the outputs."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = params.to_pure_dict()
  w = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, O)), jnp.float32)
  state = model.initial_state(B) if state is None else state

  def loss(p, x, s):
    return jnp.sum(nnx.merge(graphdef, p, rest)(x, mask, state=s, resets=resets) * w)

  return jax.grad(loss, argnums=(0, 1, 2))(params, xs, state)


@functools.lru_cache(maxsize=None)
def cached_grads(cell: str, engine: str):
  xs = data()
  mask = jnp.arange(T)[None, :] < jnp.asarray([T, 7, 4, T])[:, None]
  engine, remat = engine.removesuffix("+remat"), engine.endswith("+remat")
  model = build(cell, engine=engine, remat=remat, learned_initial_state=True)
  state = jax.tree.map(lambda a: a + 0.4, model.initial_state(B))  # rows 0-2 reset later
  return loss_grads(model, xs, mask, jnp.asarray(RESETS), state)


@pytest.mark.parametrize("cell,engine", [(c, "vjp") for c in CELLS] + [
    ("lstm", "vjp_hoisted"), ("gru", "vjp_hoisted"), ("lstm", "vjp+remat"),
    ("rnn", "vjp_hoisted+remat")])
def test_custom_vjp_gradients_equal_scan_under_resets(cell, engine):
  got, want = cached_grads(cell, engine), cached_grads(cell, "scan")
  assert_trees_close(got, want, atol=1e-5, rtol=1e-5)
  # The learned initial state receives a gradient in every layer, from t = 0 and the resets.
  for l in range(2):
    assert float(jnp.abs(got[0]["layers"][l]["carry_init"]).max()) > 1e-4, l


@pytest.mark.parametrize("engine", ["scan", "vjp"])
def test_carry_init_gradient_includes_the_resets(engine):
  # Without resets, carry_init only enters at t = 0; with a given state it does not enter
  # at all, so its gradient is exactly the resets' contribution.
  xs = data()
  model = build("gru", engine=engine, learned_initial_state=True)
  state = jax.tree.map(lambda a: a + 0.4, model.initial_state(B))
  g_none = loss_grads(model, xs, None, None, state)[0]["layers"][0]["carry_init"]
  np.testing.assert_array_equal(g_none, 0.0)
  g = loss_grads(model, xs, None, jnp.asarray(RESETS), state)[0]["layers"][0]["carry_init"]
  assert float(jnp.abs(g).max()) > 1e-4
  # Only row 3 (no reset) valid: carry_init enters nowhere again.
  only_3 = jnp.zeros((B, T), bool).at[3].set(True)
  g_3 = loss_grads(model, xs, only_3, jnp.asarray(RESETS), state)[0]["layers"][0]["carry_init"]
  np.testing.assert_array_equal(g_3, 0.0)


@pytest.mark.parametrize("shape", [(B, T + 1), (B,), (T, B), (B, T, 1)])
def test_bad_resets_shape_raises(shape):
  model = build("lstm")
  with pytest.raises(ValueError, match=r"resets must be \[batch, time\]"):
    model(data(), resets=jnp.zeros(shape, bool))


def test_bad_step_reset_shape_raises():
  model = build("lstm")
  with pytest.raises(ValueError, match=r"step reset must be \[batch\]"):
    model.step(model.initial_state(B), data()[:, 0], None, jnp.zeros((B, 1), bool))


# ---------------------------------------------------------------------------------- packing


def test_pack_makes_rows_of_episodes_with_resets():
  packed = TASKS.get("kalman")({"name": "kalman", "pack": 3}, batch_size=4, seed=0)
  single = TASKS.get("kalman")({"name": "kalman"}, batch_size=12, seed=0)
  batch, episodes = packed.train_batch(0), single.train_batch(0)
  length = single.cfg.length
  assert batch["x"].shape == (4, 3 * length, packed.in_features)
  assert batch["resets"].shape == batch["mask"].shape == batch["weight"].shape == (4, 3 * length)
  assert batch["resets"].dtype == bool
  assert [list(np.flatnonzero(r)) for r in batch["resets"]] == [[0, length, 2 * length]] * 4
  assert "resets" not in episodes
  # Row b holds episodes 3b, 3b+1, 3b+2 of the same (seed, step), end to end.
  for key in ("x", "y", "mask", "weight"):
    np.testing.assert_array_equal(batch[key], episodes[key].reshape(batch[key].shape))
  # Eval stays one episode per row; other steps give other data.
  assert "resets" not in packed.eval_batches()[0]
  assert not np.array_equal(packed.train_batch(1)["x"], batch["x"])


@pytest.mark.parametrize("cell,engine", [("lstm", "vjp"), ("gru", "scan"), ("rnn", "vjp_hoisted")])
def test_model_on_a_packed_row_equals_it_on_the_episodes(cell, engine):
  cfg = {"name": "kalman", "pack": 3, "length": 10}
  task = TASKS.get("kalman")(cfg, batch_size=2, seed=0)
  batch = task.train_batch(0)
  episodes = TASKS.get("kalman")({**cfg, "pack": 1}, batch_size=6, seed=0).train_batch(0)
  model = build(cell, engine=engine, in_features=task.in_features, out=task.out_features,
                learned_initial_state=True)
  ys = model(batch["x"], batch["mask"], resets=batch["resets"])
  want = model(episodes["x"], episodes["mask"])
  np.testing.assert_allclose(np.asarray(ys).reshape(want.shape), want, **TOL)
  np.testing.assert_allclose(task.loss(ys, batch), task.loss(want, episodes), rtol=1e-5)
  # Without the resets the episodes leak into each other.
  leaky = model(batch["x"], batch["mask"])
  assert float(jnp.abs(leaky - ys).max()) > 1e-3
