"""norm='batch_per_step' (Cooijmans et al. 2016): per-step statistics of x W_x and h W_h."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core.models import build

B, T, F, H = 4, 6, 3, 5
CELLS = ["lstm", "gru", "rnn"]


def _cfg(cell, **kw):
  return {"cell": cell, "hidden_size": H, "num_layers": 2, "norm": "batch_per_step",
          "norm_max_steps": 4, "norm_momentum": 0.0, **kw}


def _data():
  xs = jax.random.normal(jax.random.key(0), (B, T, F)) * jnp.arange(1, T + 1)[None, :, None]
  mask = np.arange(T)[None] < np.array([6, 5, 3, 6])[:, None]
  return xs, mask


def _stream(model, xs, mask):
  state, outs = model.initial_state(B), []
  for t in range(xs.shape[1]):
    state, y = model.step(state, xs[:, t], mask[:, t])
    outs.append(y)
  return jnp.stack(outs, 1)


@pytest.mark.parametrize("cell", CELLS)
def test_gains_start_at_point_one_and_get_gradients(cell):
  model = build(_cfg(cell), F, 2, nnx.Rngs(0))
  bn = model.layers[0].step_norm
  np.testing.assert_allclose(bn.gain_x[...], 0.1)
  np.testing.assert_allclose(bn.gain_h[...], 0.1)
  xs, mask = _data()
  grads = nnx.grad(lambda m: jnp.sum(m(xs, mask) ** 2))(model)
  assert float(jnp.abs(grads["layers"][0]["step_norm"]["gain_h"][...]).sum()) > 0


@pytest.mark.parametrize("cell", CELLS)
def test_statistics_differ_per_step_and_match_the_valid_rows(cell):
  xs, mask = _data()
  model = build(_cfg(cell, num_layers=1), F, 2, nnx.Rngs(0))
  model(xs, mask)
  bn = model.layers[0].step_norm
  p = model.layers[0].weights()
  means = np.asarray(bn.mean_x[...])  # momentum 0: the last batch's statistics
  assert not np.allclose(means[0], means[1], atol=1e-3)
  for t in range(4):  # rows t < T_max = 4, over the rows valid at t only
    zx = np.asarray(xs[:, t] @ p["w_x"] + p["b"])[mask[:, t]]
    np.testing.assert_allclose(means[t], zx.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.var_x[...][t], zx.var(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_padding_changes_neither_outputs_nor_statistics(cell):
  xs, mask = _data()
  a, b = build(_cfg(cell), F, 2, nnx.Rngs(0)), build(_cfg(cell), F, 2, nnx.Rngs(0))
  ya, yb = a(xs, mask), b(jnp.where(mask[..., None], xs, 50.0), mask)
  np.testing.assert_allclose(ya, yb, atol=1e-6)
  assert float(jnp.abs(ya[~mask]).max()) == 0.0
  for name in ("mean_x", "var_x", "mean_h", "var_h"):
    np.testing.assert_allclose(getattr(a.layers[1].step_norm, name)[...],
                               getattr(b.layers[1].step_norm, name)[...], atol=1e-6)


def test_a_step_with_no_valid_row_keeps_its_running_statistics():
  xs, mask = _data()
  mask = mask.copy()
  mask[:, 2:] = False  # steps 2.. have no valid row
  model = build(_cfg("lstm", norm_momentum=0.5), F, 2, nnx.Rngs(0))
  model(xs, mask)
  bn = model.layers[0].step_norm
  np.testing.assert_array_equal(bn.mean_x[...][2:], 0.0)
  np.testing.assert_array_equal(bn.var_x[...][2:], 1.0)
  assert float(jnp.abs(bn.mean_x[...][:2]).max()) > 0


@pytest.mark.parametrize("cell", CELLS)
def test_layer_major_equals_time_major(cell):
  xs, mask = _data()
  a = build(_cfg(cell), F, 2, nnx.Rngs(0))
  b = build(_cfg(cell, execution="time_major"), F, 2, nnx.Rngs(0))
  np.testing.assert_allclose(a(xs, mask), b(xs, mask), atol=1e-5)
  np.testing.assert_allclose(a.layers[1].step_norm.var_h[...], b.layers[1].step_norm.var_h[...],
                             atol=1e-5)
  ga = nnx.grad(lambda m: jnp.sum(m(xs, mask) ** 2))(build(_cfg(cell), F, 2, nnx.Rngs(0)))
  gb = nnx.grad(lambda m: jnp.sum(m(xs, mask) ** 2))(
      build(_cfg(cell, execution="time_major"), F, 2, nnx.Rngs(0)))
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_streaming_equals_full_in_training_and_eval(cell):
  xs, mask = _data()
  model = build(_cfg(cell), F, 2, nnx.Rngs(0))
  np.testing.assert_allclose(_stream(model, xs, mask), model(xs, mask), atol=1e-5)
  model.eval()
  np.testing.assert_allclose(_stream(model, xs, mask), model(xs, mask), atol=1e-5)


def test_eval_beyond_t_max_reuses_the_last_row():
  """T = 6 > T_max = 4: steps 4 and 5 use the statistics of step 3."""
  xs, _ = _data()
  model = build(_cfg("rnn", num_layers=1), F, None, nnx.Rngs(0))
  model(xs)
  model.eval()
  hs = model(xs)
  bn, p = model.layers[0].step_norm, model.layers[0].weights()
  h = jnp.zeros((B, H))
  for t in range(T):
    row = min(t, 3)
    zx = xs[:, t] @ p["w_x"] + p["b"]
    zh = h @ p["w_h"]
    z = (bn.gain_x[...] * (zx - bn.mean_x[...][row]) / jnp.sqrt(bn.var_x[...][row] + 1e-5)
         + bn.gain_h[...] * (zh - bn.mean_h[...][row]) / jnp.sqrt(bn.var_h[...][row] + 1e-5)
         + p["b"])
    h = jnp.tanh(z)
    np.testing.assert_allclose(hs[:, t], h, atol=1e-5)


def test_resets_restart_the_step_counter():
  xs, _ = _data()
  resets = np.zeros((B, T), bool)
  resets[:, 3] = True
  model = build(_cfg("gru", num_layers=1), F, 2, nnx.Rngs(0))
  model(xs)
  model.eval()
  np.testing.assert_allclose(model(xs, resets=resets)[:, 3:], model(xs[:, 3:]), atol=1e-5)


def test_custom_vjp_engines_and_recurrence_free_cells_are_refused():
  with pytest.raises(ValueError, match="batch_per_step.*valid: auto, scan, scan_hoisted"):
    build(_cfg("lstm", engine="vjp"), F, 2, nnx.Rngs(0))
  with pytest.raises(ValueError, match="no W_h"):
    build(_cfg("min_gru"), F, 2, nnx.Rngs(0))
  with pytest.raises(ValueError, match="norm_max_steps"):
    build(_cfg("lstm", norm_max_steps=0), F, 2, nnx.Rngs(0))
