"""`vowels`: JapaneseVowels, real variable-length sequence classification (Kudo et al. 1999).

Nine male speakers say the vowels /ae/; each utterance is a sequence of 12 LPC cepstrum
coefficients, 7 to 29 frames long; the class is the speaker. 270 training utterances (30 per
speaker), 370 test utterances. The files ship with the `aeon` package
(`aeon/datasets/data/JapaneseVowels/JapaneseVowels_{TRAIN,TEST}.ts`), read by the small
parser `read_ts` below (the package is never imported).

This is the lecture's variable-length case (batch norm over "sequences of different
lengths", section 2.1.3): sequences are padded to the longest (29) with `mask` False on the
padding; the label is read out at each sequence's LAST VALID step only (weight 1 there, y
holds the class id there and 0 elsewhere), so a causal model classifies after reading the
whole utterance. Channels are standardised with the training split's mean and standard
deviation over valid frames.

Training batches are `batch_size` utterances drawn from the training split (without
replacement within a batch) by (seed, step); the held-out set is the test split.

Metrics: `accuracy`, `xent` (nats). Baselines: `chance_accuracy`, the best constant guess on
the test split (its majority speaker; the training split is balanced), and `chance_xent` =
the cross-entropy of the training class frequencies on the test labels (log 9: uniform).
"""
from __future__ import annotations

import functools
import pathlib
from typing import Any

import numpy as np

from rnn_research.tasks import batching, package_data
from rnn_research.tasks.base import TASKS, Batch, ClassificationTask, Key

_DIR = "datasets/data/JapaneseVowels"


def read_ts(path: pathlib.Path) -> tuple[list[np.ndarray], list[str], list[str]]:
  """Parses a multivariate .ts file: (series [length, channels] each, labels, class names).

  Lines starting with '#' are comments and '@' headers (`@classLabel true a b ...` lists the
  classes); after `@data`, one line per series: channels separated by ':', values by ',',
  the last field the class label.
  """
  series, labels, classes, in_data = [], [], [], False
  for line in path.read_text(encoding="utf-8").splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if line.startswith("@"):
      words = line.split()
      if words[0].lower() == "@classlabel" and len(words) > 2:
        classes = words[2:]
      in_data = words[0].lower() == "@data"
      continue
    if in_data:
      *channels, label = line.split(":")
      series.append(np.array([[float(v) for v in ch.split(",")] for ch in channels]).T)
      labels.append(label.strip())
  return series, labels, classes


@functools.lru_cache(maxsize=1)
def load_splits() -> dict[str, tuple[tuple[np.ndarray, ...], np.ndarray]]:
  """{'train'|'test': (series [length, 12] each, class ids int [N])}; ids follow @classLabel."""
  out = {}
  for split in ("train", "test"):
    path = package_data.package_file("aeon", f"{_DIR}/JapaneseVowels_{split.upper()}.ts")
    series, labels, classes = read_ts(path)
    classes = classes or sorted(set(labels))
    out[split] = (tuple(series), np.array([classes.index(lab) for lab in labels], np.int32))
  return out


def pad(series: tuple[np.ndarray, ...], length: int) -> tuple[np.ndarray, np.ndarray]:
  """Zero-padded values [N, length, C] and mask [N, length] of variable-length series."""
  x = np.zeros((len(series), length, series[0].shape[1]))
  mask = np.zeros((len(series), length), bool)
  for i, s in enumerate(series):
    x[i, :len(s)], mask[i, :len(s)] = s, True
  return x, mask


@TASKS.register("vowels")
class Vowels(ClassificationTask):
  """Name the speaker of a variable-length utterance, at its last frame."""
  main_metric = ("eval/accuracy", "max")

  name = "vowels"
  config_keys = {"standardize": Key(True, "Standardise each channel with the training split's "
                                          "mean and std over valid frames.")}

  def setup(self) -> None:
    splits = load_splits()
    length = max(len(s) for series, _ in splits.values() for s in series)
    self.num_classes = int(max(ids.max() for _, ids in splits.values())) + 1
    data = {}
    for split, (series, ids) in splits.items():
      x, mask = pad(series, length)
      last = mask.sum(1) - 1
      rows = np.arange(len(ids))
      y = np.zeros(mask.shape, np.int32)
      weight = np.zeros(mask.shape, np.float32)
      y[rows, last], weight[rows, last] = ids, 1.0
      data[split] = batching.make_batch(x, y, mask, weight)
    train_x, train_mask = data["train"]["x"], data["train"]["mask"]
    if self.cfg.standardize:
      valid = train_x[train_mask]                             # [frames, C]
      mean, std = valid.mean(0), valid.std(0)
      for d in data.values():
        d["x"] = ((d["x"] - mean) / std * d["mask"][..., None]).astype(np.float32)
    self._train = data["train"]
    self.train_labels = splits["train"][1]
    self.in_features, self.out_features = train_x.shape[-1], self.num_classes
    self._set_eval(data["test"])

  def sample(self, rng: np.random.Generator, n: int) -> Batch:
    size = len(self.train_labels)
    idx = rng.choice(size, n, replace=n > size)
    return {k: v[idx] for k, v in self._train.items()}

  def metrics(self, ys: np.ndarray, data: Batch) -> dict[str, Any]:
    labels = data["y"][data["weight"] > 0]
    prior = np.bincount(self.train_labels, minlength=self.num_classes) / len(self.train_labels)
    return {**super().metrics(ys, data),
            "chance_accuracy": np.bincount(labels).max() / len(labels),
            "chance_xent": -np.mean(np.log(prior[labels]))}
