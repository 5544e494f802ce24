"""Every engine strategy against plain autodiff of a plain Python loop over `cell_step`.

Outputs, final state, and gradients w.r.t. every parameter, the inputs and a non-zero
initial state must agree for scan, scan_hoisted, vjp and vjp_hoisted, with and without
remat, with and without a mask, for every cell.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import engine, models
from rnn_research.core.step import cell_step

B, T, F, H, L = 2, 3, 3, 3, 1
TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)

CELLS = {
    "rnn": dict(cell="rnn"),
    "rnn_mlp": dict(cell="rnn", transition="mlp", mlp_hidden=4),
    "lstm_standard": dict(cell="lstm"),
    "lstm_peephole": dict(cell="lstm", lstm_variant="peephole"),
    "lstm_fgr": dict(cell="lstm", lstm_variant="fgr"),
    "lstm_lecture_peephole": dict(cell="lstm", lstm_variant="lecture", lecture_peephole=True),
    "gru": dict(cell="gru"),
}
ENGINES = ("scan", "scan_hoisted", "vjp", "vjp_hoisted")


def build(name: str, **overrides):
  cfg = {"hidden_size": H, "num_layers": L, **CELLS[name], **overrides}
  model = models.build(cfg, in_features=F, out_features=None, rngs=nnx.Rngs(0))
  # Non-trivial values everywhere (e.g. the GRU's b_hn and the mlp's b_2 start at zero).
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(7)  # numpy: no compile per random shape
  leaves = [p + jnp.asarray(0.1 * rng.normal(size=p.shape), p.dtype) for p in leaves]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


def make_mask(masked: bool | str):
  """False: mask=None; True: lengths T and 2; "holes": a gap, and a sequence that is padding
  throughout."""
  if masked == "holes":
    return jnp.asarray([[True, False] + [True] * (T - 2), [False] * T])
  return (jnp.arange(T)[None, :] < jnp.asarray([T, 2])[:, None]) if masked else None


def random_state(model, rng):
  state = model.initial_state(B)
  leaves, treedef = jax.tree.flatten(state)
  return jax.tree.unflatten(
      treedef, [jnp.asarray(0.5 * rng.normal(size=a.shape), a.dtype) for a in leaves])


def loss_of(ys, state, cot_y, cot_state):
  """A loss whose gradient probes every output and every final-state member."""
  total = jnp.sum(ys * cot_y)
  for s, c in zip(jax.tree.leaves(state), jax.tree.leaves(cot_state)):
    total = total + jnp.sum(s * c)
  return total


def reference_forward(cells, weights, xs, mask, state):
  """Plain loop: every layer, every step, `cell_step`; xs [B, T, F] -> ys [B, T, H]."""
  hs = [xs[:, t] for t in range(T)]
  finals = []
  for cell, p, carry in zip(cells, weights, state):
    out = []
    for t in range(T):
      carry, y, _ = cell_step(cell, p, carry, hs[t], None if mask is None else mask[:, t])
      out.append(y)
    hs = out
    finals.append(carry)
  return jnp.stack(hs, axis=1), tuple(finals)


@functools.lru_cache(maxsize=None)
def references(name: str, kinds: tuple, layers: int):
  """Reference outputs and gradients (plain jax.grad of the plain loop), for each mask kind
  in `kinds` (compiled together: one compile per cell)."""
  model = build(name, num_layers=layers)
  rng = np.random.default_rng(3)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  state = random_state(model, rng)
  cot_y = jnp.asarray(rng.normal(size=(B, T, H)), jnp.float32)
  cot_state = random_state(model, rng)
  cells = list(model.layers)
  weights = [cell.weights() for cell in cells]

  def ref_loss(weights, xs, state, mask):
    ys, final = reference_forward(cells, weights, xs, mask, state)
    return loss_of(ys, final, cot_y, cot_state), (ys, final)

  def all_kinds(weights, xs, state):
    return [jax.grad(functools.partial(ref_loss, mask=make_mask(kind)), argnums=(0, 1, 2),
                     has_aux=True)(weights, xs, state) for kind in kinds]

  # jit only compiles the unrolled loop (eager op-by-op dispatch is slower here).
  results = jax.jit(all_kinds)(weights, xs, state)
  return {kind: dict(xs=xs, mask=make_mask(kind), state=state, cot_y=cot_y,
                     cot_state=cot_state, ys=ys, final=final, grads=grads)
          for kind, (grads, (ys, final)) in zip(kinds, results)}


def case(name: str, masked: bool | str, layers: int = L):
  kinds = ("holes",) if masked == "holes" else (False, True)
  return references(name, kinds, layers)[masked]


def assert_trees_close(a, b, **tol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.shape == y.shape
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def assert_matches_reference(ref, ys, final, d_model, d_xs, d_state, label):
  np.testing.assert_allclose(ys, ref["ys"], **TOL, err_msg=f"{label}: ys")
  assert_trees_close(final, ref["final"], **TOL)
  d_weights, d_xs_ref, d_state_ref = ref["grads"]
  np.testing.assert_allclose(d_xs, d_xs_ref, **GRAD_TOL, err_msg=f"{label}: d xs")
  assert_trees_close(d_state, d_state_ref, **GRAD_TOL)
  # Every parameter of every layer: w_x, b, w_h and the cell's extra parameters.
  checked = 0
  for layer, ref_w in enumerate(d_weights):
    got = d_model["layers"][layer]
    flat_ref = {k: v for k, v in ref_w.items() if k != "pw"} | dict(ref_w["pw"])
    assert set(flat_ref) == set(got.keys())
    for key, want in flat_ref.items():
      np.testing.assert_allclose(got[key][...], want, **GRAD_TOL,
                                 err_msg=f"{label}: d {key} of layer {layer}")
      checked += 1
  assert checked >= 3 * len(d_weights)


def grads_with_and_without_mask(model, refs):
  """nnx.grad of the probe loss, for the unmasked and the masked reference, in one jit."""

  def loss(model, xs, state, ref):
    ys, final = model(xs, ref["mask"], state=state, return_state=True)
    return loss_of(ys, final, ref["cot_y"], ref["cot_state"]), (ys, final)

  @nnx.jit
  def both(model, xs, state):
    return [nnx.grad(functools.partial(loss, ref=ref), argnums=(0, 1, 2), has_aux=True)(
        model, xs, state) for ref in refs]

  return both(model, refs[0]["xs"], refs[0]["state"])


@functools.lru_cache(maxsize=None)
def strategy_results(name: str) -> dict:
  """{(engine, remat): [(grads, (ys, final)) without mask, with mask]} for every strategy.

  All 16 (strategy, remat, mask) gradient computations of one cell run in one nnx.jit
  program: compile time dominates this file, and one program per cell compiles ~2x faster
  than one per strategy. Each test below then checks its own strategy's slice."""
  refs = [case(name, False), case(name, True)]
  models = {(e, r): build(name, engine=e, remat=r, execution="layer_major")
            for e in ENGINES for r in (False, True)}
  for (e, r), model in models.items():
    assert model.how == engine.strategy(e, r)

  def loss(model, xs, state, ref):
    ys, final = model(xs, ref["mask"], state=state, return_state=True)
    return loss_of(ys, final, ref["cot_y"], ref["cot_state"]), (ys, final)

  @nnx.jit
  def run(models, xs, state):
    return {key: [nnx.grad(functools.partial(loss, ref=ref), argnums=(0, 1, 2),
                           has_aux=True)(model, xs, state) for ref in refs]
            for key, model in models.items()}

  return run(models, refs[0]["xs"], refs[0]["state"])


@pytest.mark.parametrize("remat", [False, True], ids=["noremat", "remat"])
@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("name", sorted(CELLS))
def test_engine_matches_plain_loop(name, engine_name, remat):
  """Outputs, final state and gradients (params, xs, initial state), without and with a mask."""
  refs = [case(name, False), case(name, True)]
  assert refs[0]["mask"] is None and refs[1]["mask"] is not None
  results = strategy_results(name)[(engine_name, remat)]
  for ref, label, ((d_model, d_xs, d_state), (ys, final)) in zip(
      refs, ("no mask", "mask"), results):
    assert_matches_reference(ref, ys, final, d_model, d_xs, d_state, label)


@pytest.mark.parametrize("execution", ["layer_major", "time_major"])
@pytest.mark.parametrize("name", ["lstm_fgr", "gru"])
def test_two_layers_match_plain_loop(name, execution):
  refs = [case(name, False, layers=2), case(name, True, layers=2)]
  model = build(name, execution=execution, num_layers=2, remat=execution == "time_major")
  results = grads_with_and_without_mask(model, refs)
  for ref, label, ((d_model, d_xs, d_state), (ys, final)) in zip(
      refs, ("no mask", "mask"), results):
    assert_matches_reference(ref, ys, final, d_model, d_xs, d_state, label)


@pytest.mark.parametrize("engine_name,remat", [("vjp", False), ("vjp_hoisted", True),
                                               ("scan", False)])
@pytest.mark.parametrize("name", ["gru", "lstm_peephole"])
def test_mask_with_gaps_and_empty_sequence(name, engine_name, remat):
  """Masked steps in the middle of a sequence freeze the carry and the step after resumes;
  a sequence that is all padding passes its initial state through, gradient included."""
  ref = case(name, "holes")
  model = build(name, engine=engine_name, remat=remat)
  ((d_model, d_xs, d_state), (ys, final)), = grads_with_and_without_mask(model, [ref])
  assert_matches_reference(ref, ys, final, d_model, d_xs, d_state, "holes")
  # Sequence 1 is padding throughout: final state = initial state, so d loss / d state_0 is
  # the final state's cotangent.
  for got, init in zip(jax.tree.leaves(final), jax.tree.leaves(ref["state"])):
    np.testing.assert_array_equal(got[1], init[1])
  for got, cot in zip(jax.tree.leaves(d_state), jax.tree.leaves(ref["cot_state"])):
    np.testing.assert_allclose(got[1], cot[1], **TOL)
  assert float(jnp.abs(d_xs[0, 1]).max()) == 0.0 and float(jnp.abs(d_xs[1]).max()) == 0.0


@pytest.mark.parametrize("chunk,remat", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("name", ["gru", "lstm_standard", "lstm_peephole", "lstm_lecture_peephole",
                                  "rnn_mlp"])
def test_backward_chunks_match_plain_loop(name, chunk, remat):
  """The custom VJP's reverse scan in chunks (T = 3: three chunks of 1, or a head of 1 and a
  chunk of 2) gives the plain loop's gradients; masks with holes and padded rows included."""
  model = build(name, engine="vjp", remat=remat, backward_chunk=chunk)
  refs = [case(name, False), case(name, True)]
  for ref, label, ((d_model, d_xs, d_state), (ys, final)) in zip(
      refs, ("no mask", "mask"), grads_with_and_without_mask(model, refs)):
    assert_matches_reference(ref, ys, final, d_model, d_xs, d_state, label)


@pytest.mark.parametrize("name", ["gru", "lstm_standard"])
def test_backward_chunks_under_resets_dropout_and_learned_state(name):
  """Chunked and whole-sequence reverse scans agree where a reset, the recurrent-dropout mask
  and a learned initial state all enter the backward (2 layers)."""
  rng = np.random.default_rng(5)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask, resets = make_mask(True), jnp.asarray([[False, True, False], [False, False, True]])

  def grads(chunk):
    model = build(name, engine="vjp", num_layers=2, recurrent_dropout=0.3,
                  learned_initial_state=True, backward_chunk=chunk)
    key = jax.random.PRNGKey(0)
    return nnx.grad(lambda m, x: jnp.sum(m(x, mask, resets=resets, key=key) ** 2),
                    argnums=(0, 1))(model, xs)

  whole = grads(T)
  for chunk in (1, 2):
    assert_trees_close(grads(chunk), whole, **GRAD_TOL)
  assert float(jnp.abs(whole[1]).max()) > 0


@pytest.mark.parametrize("steps,batch,width,expected", [
    (256, 64, 768, 8),      # dz is 192 KiB a step: 8 steps are 1.5 MiB
    (1024, 16, 384, 64),    # 24 KiB a step
    (3, 16, 384, 3),        # never more than the sequence
    (100, 4096, 4096, 1)])  # a step beyond the budget still makes a chunk of one
def test_auto_chunk_holds_about_chunk_bytes_of_dz(steps, batch, width, expected):
  from rnn_research.core.vjp import chunk_steps
  assert chunk_steps(engine.strategy("vjp", backend="cpu"), steps, batch, width) == expected
  # GPU/TPU: the whole sequence (one GEMM per weight, as cuDNN); a configured size wins.
  assert chunk_steps(engine.strategy("vjp", backend="gpu"), steps, batch, width) == steps
  assert chunk_steps(engine.strategy("vjp", backward_chunk=2), steps, batch, width) == min(2, steps)


def test_reference_gradients_are_not_trivial():
  """The reference exercises every path: no all-zero gradient."""
  for name in ("gru", "lstm_fgr", "lstm_lecture_peephole", "rnn_mlp"):
    d_weights, d_xs, d_state = case(name, True)["grads"]
    for leaf in jax.tree.leaves((d_weights, d_xs, d_state)):
      assert float(jnp.abs(leaf).max()) > 0.0


def test_masked_steps_get_no_input_gradient():
  d_xs = case("lstm_standard", True)["grads"][1]
  assert float(jnp.abs(d_xs[1, 2:]).max()) == 0.0
  assert float(jnp.abs(d_xs[1, :2]).max()) > 0.0


@pytest.mark.parametrize("name,expected", [
    ("scan", engine.Strategy(hoist=False, custom_vjp=False)),
    ("scan_hoisted", engine.Strategy(hoist=True, custom_vjp=False)),
    ("vjp", engine.Strategy(hoist=False, custom_vjp=True)),
    ("vjp_hoisted", engine.Strategy(hoist=True, custom_vjp=True)),
])
def test_strategy_names(name, expected):
  assert engine.strategy(name, backend="gpu") == expected
  assert engine.strategy(name, remat=True).remat


def test_auto_strategy_per_backend():
  cpu = engine.strategy("auto", backend="cpu")
  assert cpu.custom_vjp and not cpu.hoist and not cpu.remat
  for backend in ("gpu", "tpu", "cuda"):
    acc = engine.strategy("auto", backend=backend)
    assert acc.custom_vjp and acc.hoist
  assert engine.strategy("auto", remat=True, backend="cpu").remat


def test_unknown_engine_lists_choices():
  with pytest.raises(ValueError, match="unknown engine 'fast'") as info:
    engine.strategy("fast")
  for choice in ("auto", "scan", "scan_hoisted", "vjp", "vjp_hoisted"):
    assert choice in str(info.value)


@pytest.mark.parametrize("name,overrides,expected", [
    ("gru", {}, True), ("gru", {"activation": "relu"}, False),
    ("gru", {"horizontal_skip": "residual"}, False), ("gru", {"norm": "mini_vertical"}, False),
    ("lstm_standard", {}, True), ("lstm_standard", {"lstm_variant": "np"}, True),
    ("lstm_peephole", {}, False), ("lstm_standard", {"lstm_variant": "cifg"}, False),
    ("lstm_standard", {"activation": "relu"}, False),
    ("lstm_standard", {"horizontal_skip": "learned"}, False),
    ("lstm_standard", {"norm": "mini_vertical"}, False),
    ("lstm_standard", {"norm": "layer_per_step"}, False), ("gru", {"norm": "layer_per_step"}, False),
    ("rnn", {}, True), ("rnn_mlp", {}, False), ("rnn", {"activation": "relu"}, False),
    ("rnn", {"horizontal_skip": "residual"}, False)])
def test_own_backward_only_where_it_holds(name, overrides, expected):
  """The rnn's, GRU's and LSTM's own backward (saved gates) stands in for autodiff of their
  plain tanh step only; the gradients above (vjp engines vs the loop) then test it."""
  assert build(name, **overrides).layers[0].analytic_backward() is expected


@pytest.mark.parametrize("masked", [False, "holes"])
@pytest.mark.parametrize("name", ["rnn", "gru", "lstm_standard"])
def test_own_backward_equals_the_generic_pullback(name, masked, monkeypatch):
  """Same gradients with the cell's own backward and with the generic jax.vjp pullback, under
  masks, resets, recurrent dropout and a learned initial state (2 layers)."""
  rng = np.random.default_rng(3)
  xs = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  mask = make_mask(masked)
  resets = jnp.asarray([[False, True, False], [False, False, True]])
  cfg = dict(engine="vjp", num_layers=2, recurrent_dropout=0.3, learned_initial_state=True)

  def grads():
    model = build(name, **cfg)
    key = jax.random.PRNGKey(0)
    return nnx.grad(lambda m, x: jnp.sum(m(x, mask, resets=resets, key=key) ** 2),
                    argnums=(0, 1))(model, xs)

  analytic = grads()
  monkeypatch.setattr(type(build(name).layers[0]), "analytic_backward", lambda self: False)
  generic = grads()
  for a, b in zip(jax.tree.leaves(analytic), jax.tree.leaves(generic)):
    np.testing.assert_allclose(a, b, **GRAD_TOL)
  assert float(jnp.abs(analytic[1]).max()) > 0


@pytest.mark.parametrize("name", ["lstm_standard", "lstm_peephole"])
def test_custom_vjp_skips_the_input_gradient_nobody_asks_for(name):
  """symbolic_zeros: with gradients of the parameters only (training), the first layer's
  dX = dz W_x^T is not computed, one GEMM fewer per chunk than with the input's gradient too;
  the parameters' gradients are the same either way."""
  model = build(name, engine="vjp", backward_chunk=1)
  xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)), jnp.float32)
  graphdef, params = nnx.split(model)
  loss = lambda params, xs: jnp.sum(nnx.merge(graphdef, params)(xs) ** 2)
  dots = lambda f: str(jax.make_jaxpr(f)(params, xs)).count("dot_general")
  params_only = jax.grad(loss)
  both = jax.grad(loss, argnums=(0, 1))
  assert dots(params_only) < dots(both)
  assert_trees_close(params_only(params, xs), both(params, xs)[0], atol=0, rtol=0)


@pytest.mark.parametrize("overrides", [dict(cell="lstm", engine="vjp"),
                                       dict(cell="gru", engine="scan", execution="time_major"),
                                       dict(cell="min_gru", engine="auto")])
def test_unroll_changes_nothing_but_the_loop(overrides):
  """model.unroll = 3 (T = 7 is no multiple of it) gives the outputs and gradients of unroll=1."""
  xs = jnp.asarray(np.random.default_rng(1).normal(size=(B, 7, F)), jnp.float32)

  def run(unroll):
    model = models.build(dict(hidden_size=H, num_layers=2, unroll=unroll, **overrides),
                         in_features=F, out_features=None, rngs=nnx.Rngs(0))
    assert model.how.unroll == unroll
    return nnx.value_and_grad(lambda m: jnp.sum(jnp.sin(m(xs))))(model)

  assert_trees_close(run(3), run(1), atol=1e-6, rtol=1e-6)
