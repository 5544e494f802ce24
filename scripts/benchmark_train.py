"""`--workload=train` of scripts/benchmark.py: one optimiser step, as training runs it.

The model with a Linear(H, 1) readout, the loss of a regression task (MSE of the per-step
readout against y [B, T, 1]), gradients of the parameters only (the input needs none), and
adam(lr=1e-3) without clipping, jitted as one step:

- ours: `rnn_research.training.train.train_step_fn`, the trainer's own step (with its
  dropout key, mask, and gradient-norm metrics), jitted as the trainer's loop jits it, on the
  trainer's own `fresh_state` of the model;
- flax: nnx.RNN(OptimizedLSTMCell / GRUCell / SimpleCell) per layer + nnx.Linear(H, 1),
  nnx.Optimizer(optax.adam), one `nnx.jit` step of nnx.value_and_grad and optimizer.update,
  called through nnx.cached_partial as Flax's performance guide advises;
- torch: nn.LSTM / GRU / RNN(batch_first=True) + nn.Linear(H, 1), torch.optim.Adam,
  zero_grad / backward / step, on CUDA (cuDNN) when torch sees a GPU.

With `data_parallel`, one more `ours` row (the first variant's model) runs the trainer's
data-parallel step: state replicated and the batch split over every device by
`rnn_research.training.data_parallel`, as `--config.train.data_parallel=True` trains (on CPU,
`XLA_FLAGS=--xla_force_host_platform_device_count=N` gives N host devices).

`dtype` bfloat16 (mixed precision, for GPUs): ours `model.dtype`, Flax's cells and Linear
`dtype`, torch under `torch.autocast`; parameters stay float32 in all three.
"""
from __future__ import annotations

import statistics
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmark_harness import (FLAX_CELLS, TORCH_CELLS, Bench, Size, finite, first_call,
                               markdown_row, mem_text, memory_mb, ratios, size_label,
                               tokens_per_s, torch)
from rnn_research.core.models import build
from rnn_research.tasks.batching import make_batch
from rnn_research.tasks.losses import weighted_mse
from rnn_research.training import data_parallel as dp
from rnn_research.training.train import fresh_state, train_step_fn

LEARNING_RATE = 1e-3
COLUMNS = ["cell", "size", "impl", "step ms", "tok/s", "vs flax", "vs torch", "compile s",
           "mem MB", "loss (1st step)"]
HEADER = (f"one optimiser step: MSE of a Linear(H, 1) readout vs y [B, T, 1], grad w.r.t. "
          f"params only, adam(lr={LEARNING_RATE:g})")
# The one part of a task the trainer's step uses: a regression task's loss.
REGRESSION = SimpleNamespace(loss=lambda ys, batch: weighted_mse(ys, batch["y"], batch["weight"]))


def layers_of(size: Size) -> int:
  return size[4] if len(size) > 4 else 1


def make_data(size: Size) -> dict[str, np.ndarray]:
  """A regression batch by the task contract: x [B, T, F], y [B, T, 1], all-valid mask."""
  b, t, f = size[:3]
  rng = np.random.default_rng(0)
  return make_batch(rng.standard_normal((b, t, f), dtype=np.float32),
                    rng.standard_normal((b, t, 1), dtype=np.float32))


def ours(cell: str, size: Size, data: dict[str, np.ndarray], label: str,
         overrides: dict[str, Any], dtype: str = "float32", split: bool = False) -> Bench:
  """The trainer's step of `build(..., out_features=1)`; the state is fed back each call.
  `split`: the batch split over all devices, the state replicated (train.data_parallel)."""
  f, h = size[2:4]
  config = {"cell": cell, "hidden_size": h, "num_layers": layers_of(size), "dtype": dtype,
            **overrides}
  model = build(config, in_features=f, out_features=1, rngs=nnx.Rngs(0))
  tx = optax.adam(LEARNING_RATE)
  graphdef, state = fresh_state(model, tx)
  step = jax.jit(train_step_fn(graphdef, REGRESSION, optax.adam))
  batch, seed, lr = jax.device_put(data), np.uint32(0), np.float32(LEARNING_RATE)
  if split:
    mesh = dp.batch_mesh(size[0])
    state, batch = dp.replicate(mesh, state), dp.shard_batch(mesh, data)
  held = [state]

  def call() -> tuple[Any, Any]:
    held[0], metrics = step(held[0], batch, seed, lr)
    return held[0], metrics

  (_, metrics), seconds = first_call(call)
  compiled = step.lower(state, batch, seed, lr).compile()
  return Bench(f"ours[{label}]", call, compile_s=f"{seconds:.2f}", mem_mb=memory_mb(compiled),
               loss=float(metrics["train/loss"]), compiled=compiled)


class FlaxStack(nnx.Module):
  """L nnx.RNN layers of Flax's own cell, then nnx.Linear(H, 1)."""

  def __init__(self, cell: str, size: Size, rngs: nnx.Rngs, dtype: str = "float32"):
    f, h = size[2:4]
    make = getattr(nnx, FLAX_CELLS[cell])
    self.layers = nnx.List([nnx.RNN(make(in_features=f if l == 0 else h, hidden_features=h,
                                         dtype=jnp.dtype(dtype), rngs=rngs))
                            for l in range(layers_of(size))])
    self.readout = nnx.Linear(h, 1, dtype=jnp.dtype(dtype), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = layer(x)
    return self.readout(x).astype(jnp.float32)


@nnx.jit
def flax_step(model: FlaxStack, optimizer: nnx.Optimizer, batch: dict[str, jax.Array]
              ) -> jax.Array:
  """One training step, the way the Flax NNX guides write it; returns the loss."""
  loss, grads = nnx.value_and_grad(lambda m: REGRESSION.loss(m(batch["x"]), batch))(model)
  optimizer.update(model, grads)
  return loss


def flax_train(cell: str, size: Size, data: dict[str, np.ndarray], dtype: str) -> Bench:
  """Flax NNX's step, called through nnx.cached_partial (Flax's "Performance considerations"
  guide: it caches nnx.jit's per-call graph traversal, ~1 ms at small sizes here); model and
  optimizer update in place."""
  model = FlaxStack(cell, size, nnx.Rngs(0), dtype)
  optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)
  batch = jax.device_put(data)
  step = nnx.cached_partial(flax_step, model, optimizer)
  loss, seconds = first_call(lambda: step(batch))
  mem = memory_mb(flax_step.lower(model, optimizer, batch).compile())
  return Bench("flax", lambda: step(batch), compile_s=f"{seconds:.2f}", mem_mb=mem,
               loss=float(loss))


def torch_train(cell: str, size: Size, data: dict[str, np.ndarray], dtype: str) -> Bench:
  """torch's step: nn.LSTM / GRU / RNN + nn.Linear, Adam; x without requires_grad; on CUDA
  if available (each call then ends with a synchronize, as JAX's block_until_ready does)."""
  f, h = size[2:4]
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.manual_seed(0)
  rnn = getattr(torch.nn, TORCH_CELLS[cell])(f, h, num_layers=layers_of(size), batch_first=True)
  readout = torch.nn.Linear(h, 1)
  rnn, readout = rnn.to(device), readout.to(device)
  optimizer = torch.optim.Adam([*rnn.parameters(), *readout.parameters()], lr=LEARNING_RATE)
  x, y = (torch.from_numpy(data[k]).to(device) for k in ("x", "y"))

  def call() -> Any:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      out = readout(rnn(x)[0])
    loss = torch.nn.functional.mse_loss(out.float(), y)
    loss.backward()
    optimizer.step()
    if device == "cuda":
      torch.cuda.synchronize()
    return loss.detach()

  loss, seconds = first_call(call)
  return Bench("torch", call, compile_s=f"{seconds:.2f}", loss=float(loss))


def make_benches(cell: str, size: Size, impls: list[str],
                 variants: list[tuple[str, dict[str, Any]]], dtype: str = "float32",
                 data_parallel: bool = False) -> list[Bench]:
  """Every requested implementation's step at (cell, size) in compute `dtype`, compiled and
  run once; with `data_parallel`, also the first variant's step split over all devices."""
  data = make_data(size)
  benches = []
  if "ours" in impls:
    benches += [ours(cell, size, data, label, overrides, dtype)
                for label, overrides in variants]
    if data_parallel:
      label, overrides = variants[0]
      benches.append(ours(cell, size, data, f"{label},data_parallel={jax.device_count()}",
                          overrides, dtype, split=True))
  if "flax" in impls:
    benches.append(flax_train(cell, size, data, dtype))
  if "torch" in impls and torch is not None:
    benches.append(torch_train(cell, size, data, dtype))
  return benches


def rows(cell: str, size: Size, benches: list[Bench]) -> list[str]:
  """Markdown rows of one (cell, size): ms per step, tokens/s, speed ratios, first loss."""
  return [markdown_row([
      cell, size_label(size), bn.label, f"{1e3 * statistics.median(bn.times):.2f}",
      f"{tokens_per_s(size, bn.times):,.0f}", *ratios(size, benches, bn, ("flax", "torch")),
      bn.compile_s, mem_text(bn), f"{bn.loss:.4f}"]) for bn in benches]


def loss_warning(cell: str, size: Size, benches: list[Bench]) -> str | None:
  """A note when a first-step loss is not finite, or not within 2x of Flax's (same loss,
  different inits: the losses should be comparable, not equal)."""
  flax_loss = next((bn.loss for bn in benches if bn.label == "flax"), None)
  bad = [bn.label for bn in benches if not finite(bn.loss) or (
      finite(flax_loss) and not 0.5 <= bn.loss / flax_loss <= 2.0)]
  if not bad:
    return None
  return (f"warning: {cell} {size_label(size)}: first-step loss of {', '.join(bad)} is not "
          f"finite or not within 2x of flax's")
