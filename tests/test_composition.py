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
    end are exactly 0 (per-step norms - none, mini_layer, mini_vertical, vertical,
    layer_per_step - have no statistics and train == eval is asserted, so for them the eval-mode
    checks cover both).

One function per combination (`outputs`) makes every call the checks compare, each mode on its
own copy of the model, and returns them all. It runs eagerly, under `jax.disable_jit()`: with
tiny fixed shapes every primitive is compiled once and reused by all combinations, which
measured 2.5x less CPU time over the product than one `jax.jit` of it per combination (whose
cost is XLA compile time, ~2-3 s a combination against ~0.5 s eagerly once the primitives are
compiled); `test_jit_equals_eager` checks that the jitted function returns the same.

The fast loop (`-m "not slow"`) runs 8 combinations that hold every value of every axis (`FAST`)
and one of the `EXTRA` shapes; the whole suite runs all of them.
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
NORMS = ("none", "layer", "mini_layer", "mini_vertical", "vertical", "batch", "batch_per_step",
         "layer_per_step")
VERTICAL_SKIPS = ("none", "residual", "dense")
HORIZONTAL_SKIPS = ("none", "residual", "learned")
STATISTICS_NORMS = ("layer", "batch", "batch_per_step")  # running statistics

PRODUCT = list(itertools.product(CELLS, NORMS, VERTICAL_SKIPS, HORIZONTAL_SKIPS))
# The fast loop's share of the product: every cell, norm and skip at least once (each norm with
# a different cell and skips). The whole suite runs all 216 (the rest are marked slow).
FAST = {("rnn", "none", "none", "none"), ("lstm", "layer", "residual", "learned"),
        ("gru", "mini_layer", "dense", "residual"), ("rnn", "mini_vertical", "residual", "residual"),
        ("lstm", "vertical", "dense", "none"), ("gru", "batch", "none", "learned"),
        ("lstm", "batch_per_step", "none", "residual"),
        ("gru", "layer_per_step", "residual", "learned")}


def test_product_is_complete():
  from rnn_research.core import choices
  assert set(NORMS) == set(choices.valid(choices.Norm))
  assert set(VERTICAL_SKIPS) == set(choices.valid(choices.VerticalSkip))
  assert set(HORIZONTAL_SKIPS) == set(choices.valid(choices.HorizontalSkip))
  assert len(PRODUCT) == 216 and FAST <= set(PRODUCT)
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


def outputs(model, twin, d: dict, jit: bool = False) -> dict:
  """Every call `check_all` compares, as numpy arrays, from one function of this combination
  (`run`): eagerly, or (`jit`) compiled once. The models enter as their nnx state and every
  mode starts from its own copy of it; each call also returns the statistics after it."""
  graphdef, state = nnx.split(model)
  twin_graphdef, twin_state = nnx.split(twin)
  statistics = bool(jax.tree.leaves(nnx.state(model, nnx.BatchStat)))

  def stats(m):  # a snapshot (nnx.state holds live references)
    return jax.tree.map(jnp.asarray, nnx.state(m, nnx.BatchStat))

  def run(state, twin_state, d):
    xs, mask, garbage = d["xs"], d["mask"], d["xs_garbage"]
    short = xs[:, :T_SHORT], mask[:, :T_SHORT]  # the all-padding last step dropped

    def copy(mode: str, batch_stats=None, graphdef=graphdef, state=state):
      m = nnx.merge(graphdef, state, copy=True)
      if batch_stats is not None:
        nnx.update(m, batch_stats)
      getattr(m, mode)()
      return m

    def call(m, *args, **kwargs):
      return m(*args, **kwargs), stats(m)

    # --- train mode: one gradient step over the masked batch (junk in the padding).
    def loss(m):
      ys = m(garbage, mask)
      return jnp.sum(jnp.where(mask[..., None], jnp.square(ys - d["target"]), 0.0)), ys

    m = copy("train")
    out = {"stats0": stats(m)}
    out["grads"], out["train"] = nnx.grad(loss, has_aux=True)(m)
    out["stats_train"] = stats(m)
    if statistics:  # fresh copies: zeros in the padding; the padding dropped
      out["train_zero"] = call(copy("train"), d["xs_zero"], mask)
      out["train_short"] = call(copy("train"), *short)

    # --- eval mode, with the running statistics of the train step.
    m = copy("eval", out["stats_train"])
    twin = copy("eval", out["stats_train"], twin_graphdef, twin_state)
    out["eval"] = call(m, garbage, mask, return_state=True)
    out["twin"] = call(twin, garbage, mask, return_state=True)
    out["eval_zero"] = call(m, d["xs_zero"], mask, return_state=True)
    out["eval_short"] = call(m, *short, return_state=True)
    out["unmasked"] = call(m, xs)
    out["perturbed"] = call(m, xs.at[:, T0].add(d["perturb"]))
    carry, stream = m.initial_state(B), []
    for t in range(T):
      carry, y_t = m.step(carry, garbage[:, t], mask[:, t])
      stream.append(y_t)
    out["stream"] = (jnp.stack(stream, axis=1), carry), stats(m)
    return out

  if jit:
    return jax.tree.map(np.asarray, jax.jit(run)(state, twin_state, d))
  with jax.disable_jit():
    return jax.tree.map(np.asarray, run(state, twin_state, d))


def check_all(cfg: dict, in_features: int = F) -> None:
  d = data(in_features)
  mask = d["mask"]
  model = build(cfg, in_features)
  twin = build(cfg, in_features, execution="time_major")
  leaves_close(nnx.state(model, nnx.Param), nnx.state(twin, nnx.Param), atol=0, rtol=0)
  norm = cfg.get("norm", "none")
  per_step = norm not in STATISTICS_NORMS
  if per_step:  # no statistics: train mode is eval mode
    assert not any(hasattr(n, "use_running_average") for n in model.between if n is not None)
  out = outputs(model, twin, d)
  stats0 = jax.tree.leaves(out["stats0"])
  assert (len(stats0) > 0) == (not per_step)

  # --- train mode: one gradient step over the masked batch (junk in the padding).
  for path, g in jax.tree_util.tree_leaves_with_path(out["grads"]):
    assert np.all(np.isfinite(g)), f"non-finite gradient of {jax.tree_util.keystr(path)}"
    assert np.any(g != 0.0), f"zero gradient of {jax.tree_util.keystr(path)}"
  ys_train, stats_train = out["train"], jax.tree.leaves(out["stats_train"])
  if not per_step:  # the running statistics moved
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(stats_train, stats0))
  zero_past_end(ys_train, mask)
  if not per_step:
    # Padded values and padding length change neither valid outputs nor the statistics. (Per-
    # step norms have no statistics and train == eval, asserted below; eval checks it for them.)
    (ys_zero, stats_zero), (ys_short, stats_short) = out["train_zero"], out["train_short"]
    valid_close(ys_zero, ys_train, mask, **EXACT)
    zero_past_end(ys_zero, mask)
    leaves_close(jax.tree.leaves(stats_zero), stats_train, **EXACT)
    valid_close(ys_short, ys_train[:, :T_SHORT], mask[:, :T_SHORT], **EXACT)
    leaves_close(jax.tree.leaves(stats_short), stats_train, **EXACT)

  # --- eval mode, with the running statistics of the trained copy: no call changes them.
  for name in ("eval", "twin", "eval_zero", "eval_short", "unmasked", "perturbed", "stream"):
    leaves_close(jax.tree.leaves(out[name][1]), stats_train, atol=0, rtol=0)
  (ys, final), _ = out["eval"]
  assert ys.shape == (B, T, 2)
  zero_past_end(ys, mask)
  if per_step:  # no statistics: train mode is eval mode
    valid_close(ys, ys_train, mask, **EXACT)
  # Streaming == full call.
  (stream, state), _ = out["stream"]
  np.testing.assert_allclose(stream, ys, **TOL)
  leaves_close(state, final)
  # layer_major == time_major.
  (ys_tm, final_tm), _ = out["twin"]
  np.testing.assert_allclose(ys_tm, ys, **TOL)
  leaves_close(final_tm, final)
  # Masking: padded values, padding length.
  (ys_zero, final_zero), _ = out["eval_zero"]
  valid_close(ys_zero, ys, mask, **EXACT)
  zero_past_end(ys_zero, mask)
  leaves_close(final_zero, final, **EXACT)
  (ys_short, final_short), _ = out["eval_short"]
  np.testing.assert_allclose(ys_short, ys[:, :T_SHORT], **EXACT)
  leaves_close(final_short, final, **EXACT)
  # Causality (unmasked): x_T0 changes y_T0, never y_{<T0}.
  (ys_all, _), (ys_pert, _) = out["unmasked"], out["perturbed"]
  np.testing.assert_allclose(ys_pert[:, :T0], ys_all[:, :T0], **EXACT)
  assert float(np.abs(ys_pert[:, T0] - ys_all[:, T0]).min()) > 1e-6


@pytest.mark.parametrize("cell,norm,vertical_skip,horizontal_skip", [
    combo if combo in FAST else pytest.param(*combo, marks=pytest.mark.slow) for combo in PRODUCT])
def test_composition(cell, norm, vertical_skip, horizontal_skip):
  cfg = dict(cell=cell, norm=norm, vertical_skip=vertical_skip, horizontal_skip=horizontal_skip,
             hidden_size=H, num_layers=2, skip_span=2, norm_momentum=0.5)
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
    # LSTMP: each layer's output (and h) has width proj_size, its cell and gates hidden_size
    dict(in_features=2, hidden_size=4, proj_size=2, num_layers=2, cell="lstm",
         norm="layer_per_step", vertical_skip="residual", horizontal_skip="learned"),
    dict(in_features=3, hidden_size=4, proj_size=2, num_layers=3, cell="lstm", norm="vertical",
         vertical_skip="dense", horizontal_skip="residual"),
    dict(in_features=3, hidden_size=4, proj_size=3, num_layers=2, cell="lstm", norm="batch",
         vertical_skip="residual", horizontal_skip="none", learned_initial_state=True),
]


FAST_EXTRA = (2, 9)  # three layers, no W_p; LSTMP with layer_per_step


@pytest.mark.parametrize("cfg", [
    pytest.param(c, marks=() if k in FAST_EXTRA else pytest.mark.slow,
                 id="-".join(str(v) for v in c.values())) for k, c in enumerate(EXTRA)])
def test_composition_extra(cfg):
  cfg = dict(cfg)
  in_features = cfg.pop("in_features")
  model = models.build(cfg, in_features=in_features, out_features=2, rngs=nnx.Rngs(0))
  width = cfg.get("proj_size") or cfg["hidden_size"]  # each layer's output width
  needs_projection = cfg["vertical_skip"] == "residual" and in_features != width
  assert (model.project is not None) == needs_projection
  cfg = dict(dict(skip_span=2, norm_momentum=0.5), **cfg)
  check_all(cfg, in_features)


def test_jit_equals_eager():
  """The checks run eagerly; jitted, one combination's function returns the same."""
  cfg = dict(cell="gru", norm="batch", vertical_skip="residual", horizontal_skip="learned",
             hidden_size=H, num_layers=2, skip_span=2, norm_momentum=0.5)
  d = data(F)
  model, twin = build(cfg, F), build(cfg, F, execution="time_major")
  leaves_close(outputs(model, twin, d, jit=True), outputs(model, twin, d))
