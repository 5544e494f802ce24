"""The long-stream form of a task, the data of truncated BPTT (`train.tbptt_window` = K > 0).

A task with this form (`Streams` among its bases, `task.stream_length` S > 0, a multiple of
K) draws its B training rows as long streams of S steps, a pure function of (seed, draw):
charlm consecutive text from a random offset, multiscale one long regime-switching sequence.
Training step n takes window w = n mod (S / K) of the streams of draw d = n div (S / K):

  stream_window(n, K) = streams(d)[:, w K : (w + 1) K]   (x, y, mask, weight: [B, K, ...])
  fresh [B] bool = (w == 0)                               a row's stream starts here

so a new set of streams is drawn once the current one is used up, and a run resumed at step n
sees exactly the windows it would have seen. The trainer restarts the carry where `fresh` is
set and otherwise hands the previous window's final carry on (training/tbptt.py). The draw in
use is cached, so a stream is generated once, not once per window.
"""
from __future__ import annotations

import numbers

import numpy as np

from rnn_research.tasks import batching
from rnn_research.tasks.base import Batch, Key

STREAM_LENGTH = Key(0, "Length S of the long-stream form (0: off), for truncated BPTT: each "
                       "training row is a stream of S steps, trained train.tbptt_window steps "
                       "at a time with the carry crossing windows; a multiple of "
                       "train.tbptt_window.", low=0)


class Streams:
  """Mixin of a `Task` with a long-stream form: it implements `sample_stream(rng, n)` and
  has the key `stream_length` (`STREAM_LENGTH`)."""

  _stream_cache: tuple[int, Batch] | None = None

  def sample_stream(self, rng: np.random.Generator, n: int) -> Batch:
    """n streams of `stream_length` steps drawn with `rng` (keys x, y, mask, weight)."""
    raise NotImplementedError

  def stream_window(self, step: int, window: int) -> Batch:
    """The training batch of `step` with windows of `window` steps (module docstring)."""
    length = self.cfg.stream_length
    if not isinstance(window, numbers.Integral) or window < 1 or length % window or not length:
      raise ValueError(f"config.task.stream_length={length} must be a positive multiple of "
                       f"config.train.tbptt_window={window!r}")
    if not isinstance(step, numbers.Integral) or step < 0:
      raise ValueError(f"step must be an integer >= 0, got {step!r}")
    draw, w = divmod(int(step), length // window)
    if self._stream_cache is None or self._stream_cache[0] != draw:
      rng = batching.stream_rng(self.seed, draw)
      self._stream_cache = (draw, self.sample_stream(rng, self.batch_size))
    out = {key: v[:, w * window:(w + 1) * window] for key, v in self._stream_cache[1].items()}
    out["fresh"] = np.full(self.batch_size, w == 0)
    return out
