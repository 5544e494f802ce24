"""Generate text from a trained `charlm` run with the streaming `step` API (lecture 5.2).

  python -m rnn_research.sample --workdir=runs/charlm --prompt="ROMEO." --length=300 \
      --temperature=0.8 --top_k=0 --top_p=0.95 --num_samples=4

The prompt is fed one character at a time; then each sampled character is fed back as the next
input (autoregressive generation). The N samples run as one batch: one `model.step` per
character for all N rows, inside one jitted `lax.scan`. Row n draws step t with the key
fold_in(fold_in(key(seed), n), t), so a row does not depend on N (the first of 4 samples is the
1-sample output) and the same seed gives the same samples. The draw itself (temperature, top-k,
top-p) is `training/sampling.py`.

Output: with one sample, the prompt and its continuation; with N > 1, each is preceded by a line
`--- sample n ---` (n = 0..N-1). Exit 2 with one line `bad input: ...` for a bad flag or run.
"""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx

from rnn_research.training import run_loader, sampling
from rnn_research.cli import parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A charlm run's directory.")
flags.DEFINE_string("prompt", "\n", "Text to condition on.")
flags.DEFINE_integer("length", 300, "Characters to generate (>= 0).")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (> 0).")
flags.DEFINE_integer("top_k", 0, "Keep the k most probable characters (0 = off, <= vocab).")
flags.DEFINE_float("top_p", 1.0, "Nucleus: keep the smallest set with mass >= p (in (0, 1]; "
                   "1 = off).")
flags.DEFINE_integer("num_samples", 1, "Samples drawn at once, as one batch (>= 1).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir"])


def check_flags(length: int, temperature: float, top_k: int, top_p: float, num_samples: int,
                vocab_size: int | None = None) -> None:
  """ValueError naming the flag and its valid range for any bad value."""
  if num_samples < 1:
    raise ValueError(f"--num_samples must be >= 1, got {num_samples}")
  if length < 0:
    raise ValueError(f"--length must be >= 0, got {length}")
  sampling.check(temperature, top_k, top_p, vocab_size)


def load(workdir: str) -> tuple[object, nnx.Module]:
  """(task, model in eval mode) from the latest checkpoint of the charlm run in `workdir`."""
  config = run_loader.load_config(workdir)
  if config.task.name != "charlm":
    raise ValueError(f"sampling needs a charlm run, {workdir} holds task {config.task.name!r}")
  return run_loader.load_model(workdir, config)


def row_keys(seed: int, num_samples: int) -> jax.Array:
  """One key per row, key_n = fold_in(key(seed), n): row n's key does not depend on N."""
  base = jax.random.key(seed)
  return jax.vmap(lambda n: jax.random.fold_in(base, n))(jnp.arange(num_samples))


@functools.partial(jax.jit, static_argnames=("graph", "vocab", "length"))
def _generate(graph, params, rest, vocab: int, prompt: jax.Array, keys: jax.Array, length: int,
              temperature, top_k, top_p) -> jax.Array:
  """prompt int [P >= 1], keys [N] -> ids int [N, length]: every step one batched model.step."""
  model = nnx.merge(graph, params, rest)
  n = keys.shape[0]
  one_hot = lambda ids: jax.nn.one_hot(ids, vocab, dtype=jnp.float32)

  def feed(carry, char):
    carry, _ = model.step(carry, one_hot(jnp.full((n,), char)))
    return carry, None

  def sample(carry, t):
    state, current = carry
    state, logits = model.step(state, one_hot(current))
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
    nxt = sampling.draw_rows(step_keys, logits, temperature, top_k, top_p).astype(jnp.int32)
    return (state, nxt), nxt

  state, _ = jax.lax.scan(feed, model.initial_state(n), prompt[:-1])
  current = jnp.full((n,), prompt[-1], jnp.int32)
  _, out = jax.lax.scan(sample, (state, current), jnp.arange(length))
  return out.T


def generate_ids(model: nnx.Module, vocab: int, prompt_ids: np.ndarray, length: int,
                 keys: jax.Array, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> np.ndarray:
  """ids int [N, length] continuing `prompt_ids` (empty: id 0) over a one-hot vocabulary of
  `vocab` characters, row n drawn with keys[n]."""
  prompt = jnp.asarray(np.asarray(prompt_ids, np.int32).reshape(-1))
  if prompt.size == 0:
    prompt = jnp.zeros((1,), jnp.int32)
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  return np.asarray(_generate(graph, params, rest, vocab, prompt, keys, length,
                              jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p)))


def generate(workdir: str, prompt: str, length: int, temperature: float, seed: int = 0,
             num_samples: int = 1, top_k: int = 0, top_p: float = 1.0) -> list[str]:
  """`num_samples` continuations of `prompt`, `length` characters each, from `workdir`."""
  check_flags(length, temperature, top_k, top_p, num_samples)
  task, model = load(workdir)
  check_flags(length, temperature, top_k, top_p, num_samples, len(task.vocab))
  keys = row_keys(seed, num_samples)
  ids = generate_ids(model, len(task.vocab), task.encode(prompt), length, keys, temperature,
                     top_k, top_p)
  return [task.decode(row) for row in ids]


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    texts = generate(FLAGS.workdir, FLAGS.prompt, FLAGS.length, FLAGS.temperature, FLAGS.seed,
                     FLAGS.num_samples, FLAGS.top_k, FLAGS.top_p)
  except (ValueError, FileNotFoundError) as err:
    logging.error("bad input: %s", err)
    sys.exit(2)
  for n, text in enumerate(texts):
    if len(texts) > 1:
      print(f"--- sample {n} ---")
    print(FLAGS.prompt + text)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
