"""`--workload=layer` of scripts/benchmark.py: one recurrent layer, no readout.

fwd+bwd is the gradient of sum(y**2) with respect to every parameter *and the input x*; fwd is
the forward alone. Implementations: ours (one row per engine / remat / --model override), Flax
NNX's nnx.RNN, torch nn.RNN/LSTM/GRU, and a bare-matmul lower bound.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmark_harness import (FLAX_CELLS, TORCH_CELLS, Bench, Size, markdown_row, mem_text,
                               memory_mb, ratios, size_label, tokens_per_s, torch)
from rnn_research.core.models import build

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
COLUMNS = ["cell", "size", "impl", "fwd+bwd tok/s", "fwd tok/s", "compile s (fb/fwd)",
           "fwd+bwd ms", "mem MB", "vs flax", "vs torch", "vs bound"]
HEADER = "loss=sum(y**2), fwd+bwd = grad w.r.t. params and x"


def compile_call(f: Callable, *args: Any) -> tuple[Callable[[], Any], float, Any]:
  """AOT-compile `f` for `args`, run it once; (blocking closure, seconds to first result, mem)."""
  t0 = time.perf_counter()
  compiled = jax.jit(f).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  seconds = time.perf_counter() - t0
  return (lambda: compiled(*args)), seconds, compiled


def jax_bench(label: str, forward: Callable, params: Any, x: jax.Array, *rest: Any) -> Bench:
  """Bench of a pure `forward(params, x, *rest) -> y`; fwd+bwd is grad w.r.t. (params, x)."""
  def loss(params, x, *rest):
    return jnp.sum(forward(params, x, *rest) ** 2)

  fb, fb_s, fb_compiled = compile_call(jax.grad(loss, argnums=(0, 1)), params, x, *rest)
  fwd, fwd_s, _ = compile_call(forward, params, x, *rest)
  return Bench(label, fb, fwd, f"{fb_s:.2f}/{fwd_s:.2f}", memory_mb(fb_compiled))


def nnx_bench(label: str, module: nnx.Module, x: jax.Array, **kwargs: Callable[[], Any]) -> Bench:
  """Bench of module(x, **{k: make() ...}), made pure with nnx.split / nnx.merge."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  params, rest = params.to_pure_dict(), rest.to_pure_dict()  # running norm stats mutate in rest

  def forward(params, x, rest):
    return nnx.merge(graphdef, params, rest)(x, **{k: make() for k, make in kwargs.items()})

  return jax_bench(label, forward, params, x, rest)


def ours(cell: str, size: Size, x: jax.Array, label: str, overrides: dict[str, Any]) -> Bench:
  """rnn_research's stack (one layer unless `overrides` say otherwise), no readout; `key`
  feeds dropout where an override sets a rate."""
  _, _, f, h = size
  model = build({"cell": cell, "hidden_size": h, **overrides}, in_features=f, out_features=None,
                rngs=nnx.Rngs(0))
  return nnx_bench(f"ours[{label}]", model, x, key=lambda: jax.random.PRNGKey(0))


def flax_nnx(cell: str, size: Size, x: jax.Array) -> Bench:
  """flax.nnx.RNN around Flax's own cell; a fresh carry-init RNG stream inside the trace
  (the module's own stream cannot be advanced under jit(grad(...)): TraceContextError)."""
  _, _, f, h = size
  module = nnx.RNN(getattr(nnx, FLAX_CELLS[cell])(in_features=f, hidden_features=h,
                                                  rngs=nnx.Rngs(0)), rngs=False)
  return nnx_bench("flax", module, x, rngs=lambda: nnx.Rngs(carry=0))


def bound(cell: str, size: Size, x: jax.Array) -> Bench:
  """Lower bound: one input GEMM plus a scan of bare [B, H] @ [H, G*H] matmuls."""
  _, _, f, h = size
  g = GATES[cell]
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {"w_x": jax.random.normal(k1, (f, g * h)) / np.sqrt(f),
            "w_h": 0.5 * jax.random.normal(k2, (h, g * h)) / np.sqrt(h)}  # keeps the state O(1)

  def forward(p, x):
    b, t, _ = x.shape
    zx = (jnp.swapaxes(x, 0, 1).reshape(t * b, f) @ p["w_x"]).reshape(t, b, g * h)

    def step(z, zx_t):
      z = zx_t + z[:, :h] @ p["w_h"]
      return z, z[:, :h]

    _, ys = jax.lax.scan(step, jnp.zeros((b, g * h), x.dtype), zx)
    return ys

  return jax_bench("bound", forward, params, x)


def torch_bench(cell: str, size: Size, x_np: np.ndarray) -> Bench:
  """torch.nn.LSTM / GRU / RNN, batch_first; grads of parameters and x."""
  _, _, f, h = size
  torch.manual_seed(0)
  module = getattr(torch.nn, TORCH_CELLS[cell])(f, h, batch_first=True)
  x = torch.from_numpy(x_np).requires_grad_(True)

  def fb() -> None:
    module.zero_grad(set_to_none=True)
    x.grad = None
    y, _ = module(x)
    (y ** 2).sum().backward()

  def fwd() -> None:
    with torch.no_grad():
      module(x)

  fb(), fwd()  # warm-up
  return Bench("torch", fb, fwd)


def make_benches(cell: str, size: Size, impls: list[str],
                 variants: list[tuple[str, dict[str, Any]]]) -> list[Bench]:
  """Every requested implementation at (cell, size), compiled and run once."""
  b, t, f, _ = size
  x_np = np.random.default_rng(0).standard_normal((b, t, f), dtype=np.float32)
  x = jnp.asarray(x_np)
  benches = []
  if "ours" in impls:
    benches += [ours(cell, size, x, label, overrides) for label, overrides in variants]
  if "flax" in impls:
    benches.append(flax_nnx(cell, size, x))
  if "torch" in impls and torch is not None:
    benches.append(torch_bench(cell, size, x_np))
  if "bound" in impls:
    benches.append(bound(cell, size, x))
  return benches


def rows(cell: str, size: Size, benches: list[Bench]) -> list[str]:
  """Markdown rows of one (cell, size), with fwd+bwd speed ratios against the references."""
  out = []
  for bn in benches:
    out.append(markdown_row([
        cell, size_label(size), bn.label, f"{tokens_per_s(size, bn.times):,.0f}",
        f"{tokens_per_s(size, bn.fwd_times):,.0f}", bn.compile_s,
        f"{1e3 * statistics.median(bn.times):.2f}", mem_text(bn),
        *ratios(size, benches, bn, ("flax", "torch", "bound"))]))
  return out
