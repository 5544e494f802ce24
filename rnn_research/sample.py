"""Generate text from a trained `charlm` run with the streaming `step` API (lecture 5.2).

  python -m rnn_research.sample --workdir=runs/charlm --prompt="ROMEO." --length=300 \
      --temperature=0.8 --top_k=0 --top_p=0.95 --num_samples=4

The prompt is fed one character at a time; then each sampled character is fed back as the next
input (autoregressive generation). The N samples run as one batch, and a row does not depend on
N (the first of 4 samples is the 1-sample output); the same seed gives the same samples. The
draw (temperature, top-k, top-p) and the generation loop are `training/sampling.py`.

Output: with one sample, the prompt and its continuation; with N > 1, each is preceded by a line
`--- sample n ---` (n = 0..N-1). Exit 2 with one line `bad input: ...` for a bad flag or run.
"""
import sys

from absl import app, flags, logging

from rnn_research.cli import parse_flags
from rnn_research.training.sampling import generate

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
