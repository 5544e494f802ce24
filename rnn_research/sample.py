"""Generate text from a trained `charlm` run with the streaming `step` API (lecture 5.2).

  python -m rnn_research.sample --workdir=runs/charlm --prompt="ROMEO." --length=300 \
      --temperature=0.8

The prompt is fed one character at a time; then each sampled character is fed back as the next
input (autoregressive generation).
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx

from rnn_research.training import train
from rnn_research.training.checkpointing import Checkpointer
from rnn_research.cli import parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A charlm run's directory.")
flags.DEFINE_string("prompt", "\n", "Text to condition on.")
flags.DEFINE_integer("length", 300, "Characters to generate.")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature (> 0).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir"])


def generate(workdir: str, prompt: str, length: int, temperature: float, seed: int = 0) -> str:
  """`length` characters sampled after `prompt` from the latest checkpoint in `workdir`."""
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.task.name != "charlm":
    raise ValueError(f"sampling needs a charlm run, {workdir} holds task {config.task.name!r}")
  task, graphdef, state, _ = train.init_state(config)
  restored = Checkpointer(os.path.join(workdir, "checkpoints")).restore(state)
  if restored is None:
    raise ValueError(f"no checkpoint in {workdir}/checkpoints to sample from")
  state = restored[1]
  model = nnx.merge(graphdef, state["params"], state["rest"])
  model.eval()
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  step = jax.jit(lambda p, r, s, x: nnx.merge(graph, p, r).step(s, x))
  carry = model.initial_state(1)
  ids = list(task.encode(prompt)) or [0]
  key = jax.random.key(seed)
  for i in ids[:-1]:
    carry, _ = step(params, rest, carry, task.one_hot(np.array([i])))
  out, current = [], ids[-1]
  for _ in range(length):
    carry, logits = step(params, rest, carry, task.one_hot(np.array([current])))
    key, sub = jax.random.split(key)
    current = int(jax.random.categorical(sub, jnp.asarray(logits[0]) / temperature))
    out.append(current)
  return task.decode(np.array(out))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    text = generate(FLAGS.workdir, FLAGS.prompt, FLAGS.length, FLAGS.temperature, FLAGS.seed)
  except (ValueError, FileNotFoundError) as err:
    logging.error("bad input: %s", err)
    sys.exit(2)
  print(FLAGS.prompt + text)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
