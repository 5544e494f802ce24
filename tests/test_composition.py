"""Every design axis composes: cell x norm x vertical skip x horizontal skip, each with all others.

For each combination one model is built and every guarantee is checked on it:
  - one train-mode gradient step over a masked batch: every parameter's gradient is finite and
    non-zero;
  - eval mode: streaming (`step` with mask_t) == the full call, outputs and final state;
  - eval mode: layer_major == time_major (a twin built with execution='time_major' from the same
    rngs, asserted to hold the same parameters and given the same running statistics);
  - eval mode: causality (changing x_t leaves y_{<t} unchanged and changes y_t);
  - eval AND train mode: padded values and padding length never change valid outputs, and in
    train mode never change the batch/sequence statistics either; outputs past each sequence's
    end are exactly 0 (per-step norms - none, mini_layer, mini_vertical, vertical - have no
    statistics and train == eval is asserted, so for them the eval-mode checks cover both).

Everything runs eagerly under `jax.disable_jit()`: with tiny fixed shapes every primitive is
compiled once and reused by all 189 combinations, which measured ~3x faster than one jit per
combination (whose cost is XLA compile time); `test_jit_equals_eager` checks one model jitted.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models

import param_noise

B, T, F, H = 3, 4, 2, 3  # F != H: the residual vertical skip's projection W_p exists
# every sequence has padding; step T-1 is padding everywhere; at least two rows are valid at
# every other step (batch_per_step's statistics of a single row carry no gradient)
LENGTHS = (3, 3, 1)
T_SHORT = 3          # the same batch with the all-padding last step dropped
T0 = 2               # the perturbed step of the causality check
TOL = dict(atol=1e-5, rtol=1e-5)
EXACT = dict(atol=1e-6, rtol=1e-6)

CELLS = ("rnn", "lstm", "gru")
NORMS = ("none", "layer", "mini_layer", "mini_vertical", "vertical", "batch", "batch_per_step")
VERTICAL_SKIPS = ("none", "residual", "dense")
HORIZONTAL_SKIPS = ("none", "residual", "learned")
STATISTICS_NORMS = ("layer", "batch", "batch_per_step")  # running statistics

PRODUCT = list(itertools.product(CELLS, NORMS, VERTICAL_SKIPS, HORIZONTAL_SKIPS))
# The fast loop's share of the product: every cell, norm and skip at least once (each norm with
# a different cell and skips). The whole suite runs all 189 (the rest are marked slow).
FAST = {("rnn", "none", "none", "none"), ("lstm", "layer", "residual", "learned"),
        ("gru", "mini_layer", "dense", "residual"), ("rnn", "mini_vertical", "residual", "residual"),
        ("lstm", "vertical", "dense", "none"), ("gru", "batch", "none", "learned"),
        ("lstm", "batch_per_step", "none", "residual")}


def test_product_is_complete():
  from rnn_research.core import choices
  assert set(NORMS) == set(choices.valid(choices.Norm))
  assert set(VERTICAL_SKIPS) == set(choices.valid(choices.VerticalSkip))
  assert set(HORIZONTAL_SKIPS) == set(choices.valid(choices.HorizontalSkip))
  assert len(PRODUCT) == 189 and FAST <= set(PRODUCT)
  for axis, values in enumerate((CELLS, NORMS, VERTICAL_SKIPS, HORIZONTAL_SKIPS)):
    assert {combo[axis] for combo in FAST} == set(values)  # the fast share covers every value


def build(cfg: dict, in_features: int, execution: str = "layer_major"):
  """The model of `cfg` with every parameter moved off its initial value (unit gains and zero
  biases hide bugs); the same cfg and execution-independent seed give the same weights."""
  model = models.build(dict(cfg, execution=execution), in_features=in_features, out_features=2,
                       rngs=nnx.Rngs(0))
  return param_noise.perturb(model, 0.2)


def data(in_features: int):
  rng = np.random.default_rng(42)
  xs = jnp.asarray(rng.normal(size=(B, T, in_features)), jnp.float32)
  mask = jnp.arange(T)[None, :] < jnp.asarray(LENGTHS)[:, None]
  garbage = jnp.asarray(50.0 * rng.normal(size=(B, T, in_features)), jnp.float32)
  xs_zero = jnp.where(mask[..., None], xs, 0.0)         # zeros in padded positions
  xs_garbage = jnp.where(mask[..., None], xs, garbage)  # large junk in padded positions
  perturb = jnp.asarray(3.0 * rng.normal(size=(B, in_features)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(B, T, 2)), jnp.float32)
  return dict(xs=xs, mask=mask, xs_zero=xs_zero, xs_garbage=xs_garbage, perturb=perturb,
              target=target)


def leaves_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


def valid_close(a, b, mask, **tol):
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], **(tol or TOL))


def zero_past_end(ys, mask):
  assert np.all(np.asarray(ys)[~np.asarray(mask)] == 0.0)


def batch_stats(model):
  """A snapshot of the running statistics (nnx.state holds live references)."""
  return [np.array(a) for a in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


def train_call(model, xs, mask):
  """A train-mode call on a copy (the running statistics of `model` stay as they are)."""
  m = nnx.clone(model)
  m.train()
  ys = m(xs, mask)
  return ys, batch_stats(m)


def check_all(cfg: dict, in_features: int = F) -> None:
  d = data(in_features)
  xs, mask = d["xs"], d["mask"]
  model = build(cfg, in_features)
  twin = build(cfg, in_features, execution="time_major")
  leaves_close(nnx.state(model, nnx.Param), nnx.state(twin, nnx.Param), atol=0, rtol=0)
  norm = cfg.get("norm", "none")
  per_step = norm not in STATISTICS_NORMS
  stats0 = batch_stats(model)
  assert (len(stats0) > 0) == (not per_step)

  # --- train mode: one gradient step over the masked batch (junk in the padding).
  def loss(m):
    ys = m(d["xs_garbage"], mask)
    return jnp.sum(jnp.where(mask[..., None], jnp.square(ys - d["target"]), 0.0)), ys

  trained = nnx.clone(model)
  trained.train()
  grads, ys_train = nnx.grad(loss, has_aux=True)(trained)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), f"non-finite gradient of {jax.tree_util.keystr(path)}"
    assert np.any(g != 0.0), f"zero gradient of {jax.tree_util.keystr(path)}"
  stats_train = batch_stats(trained)
  if not per_step:  # the running statistics moved
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(stats_train, stats0))
  zero_past_end(ys_train, mask)
  if not per_step:
    # Padded values and padding length change neither valid outputs nor the statistics. (Per-
    # step norms have no statistics and train == eval, asserted below; eval checks it for them.)
    ys_zero, stats_zero = train_call(model, d["xs_zero"], mask)
    valid_close(ys_zero, ys_train, mask, **EXACT)
    zero_past_end(ys_zero, mask)
    leaves_close(stats_zero, stats_train, **EXACT)
    ys_short, stats_short = train_call(model, xs[:, :T_SHORT], mask[:, :T_SHORT])
    valid_close(ys_short, ys_train[:, :T_SHORT], mask[:, :T_SHORT], **EXACT)
    leaves_close(stats_short, stats_train, **EXACT)

  # --- eval mode, with the running statistics of the trained copy.
  model = trained
  model.eval()
  nnx.update(twin, nnx.state(model, nnx.BatchStat))
  leaves_close(batch_stats(twin), stats_train, atol=0, rtol=0)
  twin.eval()
  ys, final = model(d["xs_garbage"], mask, return_state=True)
  assert ys.shape == (B, T, 2)
  zero_past_end(ys, mask)
  if per_step:  # no statistics: train mode is eval mode
    assert not any(hasattr(n, "use_running_average") for n in model.between if n is not None)
    valid_close(ys, ys_train, mask, **EXACT)
  # Streaming == full call.
  state, stream = model.initial_state(B), []
  for t in range(T):
    state, y_t = model.step(state, d["xs_garbage"][:, t], mask[:, t])
    stream.append(y_t)
  np.testing.assert_allclose(jnp.stack(stream, axis=1), ys, **TOL)
  leaves_close(state, final)
  # layer_major == time_major.
  ys_tm, final_tm = twin(d["xs_garbage"], mask, return_state=True)
  np.testing.assert_allclose(ys_tm, ys, **TOL)
  leaves_close(final_tm, final)
  # Masking: padded values, padding length.
  ys_zero, final_zero = model(d["xs_zero"], mask, return_state=True)
  valid_close(ys_zero, ys, mask, **EXACT)
  zero_past_end(ys_zero, mask)
  leaves_close(final_zero, final, **EXACT)
  ys_short, final_short = model(xs[:, :T_SHORT], mask[:, :T_SHORT], return_state=True)
  np.testing.assert_allclose(ys_short, ys[:, :T_SHORT], **EXACT)
  leaves_close(final_short, final, **EXACT)
  # Causality (unmasked): x_T0 changes y_T0, never y_{<T0}.
  ys_all = model(xs)
  ys_pert = model(xs.at[:, T0].add(d["perturb"]))
  np.testing.assert_allclose(ys_pert[:, :T0], ys_all[:, :T0], **EXACT)
  assert float(jnp.abs(ys_pert[:, T0] - ys_all[:, T0]).min()) > 1e-6
  # The eval-mode calls never touch the running statistics.
  leaves_close(batch_stats(model), stats_train, atol=0, rtol=0)


@pytest.mark.parametrize("cell,norm,vertical_skip,horizontal_skip", [
    combo if combo in FAST else pytest.param(*combo, marks=pytest.mark.slow) for combo in PRODUCT])
def test_composition(cell, norm, vertical_skip, horizontal_skip):
  cfg = dict(cell=cell, norm=norm, vertical_skip=vertical_skip, horizontal_skip=horizontal_skip,
             hidden_size=H, num_layers=2, skip_span=2, norm_momentum=0.5)
  with jax.disable_jit():
    check_all(cfg)


# in_features == hidden_size (the residual skip's h^(-1) = x, no projection) and three layers
# (dense and residual across more than one pair). The product has F=2 != H=3 throughout; the
# sizes here reuse its shapes where they can (each new shape costs compiles).
EXTRA = [
    dict(in_features=3, hidden_size=3, num_layers=2, cell="lstm", norm="layer",
         vertical_skip="residual", horizontal_skip="residual"),
    dict(in_features=3, hidden_size=3, num_layers=2, cell="gru", norm="batch",
         vertical_skip="residual", horizontal_skip="learned"),
    dict(in_features=3, hidden_size=3, num_layers=3, cell="rnn", norm="vertical",
         vertical_skip="residual", horizontal_skip="none"),
    dict(in_features=2, hidden_size=3, num_layers=3, cell="gru", norm="mini_layer",
         vertical_skip="dense", horizontal_skip="learned"),
    dict(in_features=2, hidden_size=3, num_layers=3, cell="lstm", norm="batch",
         vertical_skip="dense", horizontal_skip="residual"),
    dict(in_features=2, hidden_size=3, num_layers=3, cell="rnn", norm="mini_vertical",
         vertical_skip="residual", horizontal_skip="learned"),
    dict(in_features=2, hidden_size=3, num_layers=3, cell="gru", norm="vertical",
         vertical_skip="dense", horizontal_skip="residual", skip_span=3),
    dict(in_features=2, hidden_size=3, num_layers=3, cell="lstm", norm="layer",
         norm_layers="0,2", vertical_skip="dense", horizontal_skip="learned", skip_span=1),
]


@pytest.mark.parametrize("cfg", EXTRA, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_composition_extra(cfg):
  cfg = dict(cfg)
  in_features = cfg.pop("in_features")
  model = models.build(cfg, in_features=in_features, out_features=2, rngs=nnx.Rngs(0))
  needs_projection = cfg["vertical_skip"] == "residual" and in_features != cfg["hidden_size"]
  assert (model.project is not None) == needs_projection
  cfg = dict(dict(skip_span=2, norm_momentum=0.5), **cfg)
  with jax.disable_jit():
    check_all(cfg, in_features)


def test_jit_equals_eager():
  """The product runs eagerly; one composed model under nnx.jit gives the same train-mode
  gradients, outputs and running statistics, and the same eval-mode outputs."""
  cfg = dict(cell="gru", norm="batch", vertical_skip="residual", horizontal_skip="learned",
             hidden_size=H, num_layers=2, skip_span=2, norm_momentum=0.5)
  d = data(F)
  model = build(cfg, F)

  def train(m, xs, mask):
    m.train()

    def loss(m):
      ys = m(xs, mask)
      return jnp.sum(jnp.square(ys - d["target"])), ys

    grads, ys = nnx.grad(loss, has_aux=True)(m)
    m.eval()
    return grads, ys, m(xs, mask)

  eager = nnx.clone(model)
  with jax.disable_jit():
    want = train(eager, d["xs_garbage"], d["mask"])
  jitted = nnx.clone(model)
  got = nnx.jit(train)(jitted, d["xs_garbage"], d["mask"])
  leaves_close(got, want)
  leaves_close(batch_stats(jitted), batch_stats(eager))
