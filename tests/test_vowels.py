"""JapaneseVowels: the .ts parser, the split sizes, padding and the last-step label."""
from __future__ import annotations

import numpy as np

from rnn_research.tasks import vowels


def test_ts_parser_on_a_small_file(tmp_path):
  path = tmp_path / "toy.ts"
  path.write_text("# comment\n@problemName toy\n@classLabel true a b\n@data\n"
                  "1,2,3:4,5,6:b\n\n7,8:9,10:a\n")
  series, labels, classes = vowels.read_ts(path)
  assert classes == ["a", "b"] and labels == ["b", "a"]
  np.testing.assert_array_equal(series[0], [[1, 4], [2, 5], [3, 6]])
  np.testing.assert_array_equal(series[1], [[7, 9], [8, 10]])


def test_shipped_splits():
  splits = vowels.load_splits()
  (train, train_ids), (test, test_ids) = splits["train"], splits["test"]
  assert len(train) == 270 and len(test) == 370
  lengths = [len(s) for s in train + test]
  assert min(lengths) >= 7 and max(lengths) == 29
  assert all(s.shape[1] == 12 for s in train + test)
  assert set(train_ids) == set(test_ids) == set(range(9))
  assert np.all(np.bincount(train_ids) == 30)


def test_padding_mask_and_last_step_label():
  task = vowels.Vowels({}, 16, 0)
  assert (task.in_features, task.out_features) == (12, 9) and task.eval_size == 370
  splits = vowels.load_splits()
  ev = task._eval
  lengths = ev["mask"].sum(1)
  np.testing.assert_array_equal(lengths, [len(s) for s in splits["test"][0]])
  assert np.all(ev["mask"] == (np.arange(29) < lengths[:, None]))
  rows = np.arange(370)
  np.testing.assert_array_equal(ev["weight"].sum(1), 1.0)
  np.testing.assert_array_equal(ev["weight"][rows, lengths - 1], 1.0)
  np.testing.assert_array_equal(ev["y"][rows, lengths - 1], splits["test"][1])
  assert np.all(ev["x"][~ev["mask"]] == 0)
  frames = task._train["x"][task._train["mask"]]
  np.testing.assert_allclose(frames.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(frames.std(0), 1, atol=1e-4)


def test_chance_baseline_is_the_majority_speaker():
  task = vowels.Vowels({}, 64, 0)
  m = task.evaluate(lambda b: np.zeros(b["x"].shape[:2] + (9,), np.float32))
  counts = np.bincount(vowels.load_splits()["test"][1])
  assert m["chance_accuracy"] == counts.max() / 370
  assert abs(m["chance_xent"] - np.log(9)) < 1e-9
