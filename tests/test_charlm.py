"""The Shakespeare character LM: split by play, vocabulary, encoding and the unigram baseline."""
from __future__ import annotations

import numpy as np
import pytest

from rnn_research.tasks import charlm


@pytest.fixture(scope="module")
def task() -> charlm.CharLM:
  return charlm.CharLM({}, 8, 0)


def test_held_out_plays_are_disjoint_from_training_plays(task):
  names = [n for n, _ in charlm.load_plays()]
  assert len(names) == 38
  assert set(task.train_plays).isdisjoint(task.eval_plays)
  assert sorted(task.train_plays + task.eval_plays) == sorted(names)
  assert task.eval_plays == [sorted(names)[i] for i in (7, 15, 23, 31)]


def test_markup_is_stripped():
  text = charlm.clean("# Hamlet\n\n## ACT I\n\n_Enter \\[Ghost]_  \n**BERNARDO**  \nWho's there?\n")
  assert text == "Hamlet\n\nACT I\n\nEnter [Ghost]\nBERNARDO\nWho's there?\n"


def test_vocabulary_and_round_trip(task):
  assert task.vocab == sorted(task.vocab) and len(set(task.vocab)) == len(task.vocab)
  assert charlm.UNK in task.vocab and {"\n", " ", "a", "Z", "?"} <= set(task.vocab)
  text = "To be, or not to be: that is the question.\nHAMLET"
  ids = task.encode(text)
  assert ids.dtype == np.int32 and task.decode(ids) == text
  assert task.decode(task.encode("Ω")) == charlm.UNK
  onehot = task.one_hot(ids)
  assert onehot.shape == (len(text), len(task.vocab)) and onehot.dtype == np.float32
  np.testing.assert_array_equal(onehot.argmax(-1), ids)


def test_targets_are_the_next_character(task):
  batch = task.train_batch(0)
  np.testing.assert_array_equal(batch["x"][:, 1:].argmax(-1), batch["y"][:, :-1])
  assert batch["x"].shape == (8, 128, len(task.vocab))
  ev = task.eval_batches()
  assert sum(len(b["x"]) for b in ev) == 64 and ev[0]["x"].shape[1] == 256


def test_unigram_baseline_and_bpc(task):
  m = task.evaluate(lambda b: np.broadcast_to(task.unigram_logp, b["x"].shape).copy())
  assert 3.0 < m["unigram_bpc"] < 6.0
  assert m["bpc"] == pytest.approx(m["unigram_bpc"], rel=1e-5)
  assert m["bpc"] == pytest.approx(m["xent"] / np.log(2), rel=1e-6)
  uniform = task.evaluate(lambda b: np.zeros(b["x"].shape, np.float32))
  assert uniform["bpc"] == pytest.approx(np.log2(len(task.vocab)), rel=1e-5)
