"""Sampling the next character and batched generation (`training/sampling.py`); its CLI.

Fast: the filters on hand examples, the draw's frequencies against the softmax (chi-square,
fixed seed), batched rows against single-row runs of an untrained model. Slow (subprocesses):
the CLI's one-line errors and `--num_samples` on a tiny trained charlm run.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.core import models
from rnn_research.training import sampling

ROOT = Path(__file__).resolve().parents[1]
NEG = -np.inf


def probs_of(logits, **kw) -> np.ndarray:
  return np.asarray(sampling.probabilities(jnp.asarray(logits, jnp.float32), **kw))


def counts(logits, n: int, seed: int = 0, **kw) -> np.ndarray:
  keys = jax.random.split(jax.random.key(seed), n)
  rows = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, len(logits)))
  ids = sampling.draw_rows(keys, rows, **kw)
  return np.bincount(np.asarray(ids), minlength=len(logits))


# ------------------------------------------------------------------------------ filters


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_keeps_exactly_the_k_largest(k):
  logits = np.array([0.3, 2.0, -1.0, 1.5, 0.9], np.float32)
  p = probs_of(logits, top_k=k)
  kept = sorted(np.argsort(-logits)[:k])
  assert [i for i in range(5) if p[i] > 0] == kept
  want = np.exp(logits[kept]) / np.exp(logits[kept]).sum()  # softmax renormalised over the k
  np.testing.assert_allclose(p[kept], want, rtol=1e-5)


def test_top_k_ties_keep_the_lower_ids_and_zero_is_off():
  logits = jnp.array([1.0, 2.0, 2.0, 2.0, 0.0])
  assert np.isfinite(np.asarray(sampling.top_k_filter(logits, 2))).tolist() == [
      False, True, True, False, False]
  assert np.array_equal(np.asarray(sampling.top_k_filter(logits, 0)), np.asarray(logits))
  np.testing.assert_allclose(probs_of(logits, top_k=5), probs_of(logits), rtol=1e-6)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
  logits = np.log(np.array([0.1, 0.5, 0.15, 0.25], np.float32))
  kept = lambda p: (probs_of(logits, top_p=p) > 0).tolist()
  assert kept(0.3) == [False, True, False, False]     # 0.5 >= 0.3
  assert kept(0.5) == [False, True, False, False]     # exactly reached by the first
  assert kept(0.6) == [False, True, False, True]      # 0.5 + 0.25
  assert kept(0.75) == [False, True, False, True]     # exactly reached: no third token
  assert kept(0.76) == [False, True, True, True]
  assert kept(0.9) == [False, True, True, True]
  assert kept(0.91) == [True, True, True, True]
  assert kept(1.0) == [True, True, True, True]
  np.testing.assert_allclose(probs_of(logits, top_p=0.6), [0, 2 / 3, 0, 1 / 3], rtol=1e-5)


def test_top_p_ties_at_the_boundary_keep_the_lower_id():
  logits = np.log(np.array([0.2, 0.4, 0.2, 0.2], np.float32))
  assert (probs_of(logits, top_p=0.5) > 0).tolist() == [True, True, False, False]
  assert (probs_of(logits, top_p=0.7) > 0).tolist() == [True, True, True, False]
  np.testing.assert_allclose(probs_of(logits, top_p=0.5), [1 / 3, 2 / 3, 0, 0], rtol=1e-5)


def test_top_p_applies_after_temperature_and_top_k():
  logits = np.log(np.array([0.1, 0.5, 0.15, 0.25], np.float32))
  # T = 0.5 squares then renormalises: [.01, .25, .0225, .0625] / .345 -> 0.725, 0.181, ...
  assert (probs_of(logits, temperature=0.5, top_p=0.8) > 0).tolist() == [
      False, True, False, True]
  assert (probs_of(logits, top_k=2, top_p=1.0) > 0).tolist() == [False, True, False, True]
  assert (probs_of(logits, top_k=2, top_p=0.6) > 0).tolist() == [False, True, False, False]


# ------------------------------------------------------------------------------- draws


def test_small_temperature_approaches_argmax():
  logits = np.array([0.1, 1.0, 0.7, -2.0], np.float32)
  assert counts(logits, 2000, temperature=0.01).tolist() == [0, 2000, 0, 0]
  p = probs_of(logits, temperature=0.05)
  assert p[1] > 0.99


def test_temperature_one_unfiltered_matches_the_softmax_frequencies():
  probs = np.array([0.1, 0.2, 0.3, 0.4])
  n = 20000
  seen = counts(np.log(probs), n, seed=3)
  chi2 = float(((seen - n * probs) ** 2 / (n * probs)).sum())
  assert chi2 < 16.27, (seen, chi2)  # chi-square, 3 dof, p = 0.001


def test_filtered_draws_follow_the_renormalised_distribution():
  probs = np.array([0.1, 0.5, 0.15, 0.25])
  n = 20000
  seen = counts(np.log(probs), n, seed=4, top_p=0.6)
  assert seen[0] == seen[2] == 0
  expect = n * np.array([2 / 3, 1 / 3])
  chi2 = float(((seen[[1, 3]] - expect) ** 2 / expect).sum())
  assert chi2 < 10.83, (seen, chi2)  # 1 dof, p = 0.001
  assert counts(np.log(probs), 5000, seed=5, top_k=1).tolist() == [0, 5000, 0, 0]


def test_check_names_the_flag_and_range():
  for kw, flag in [(dict(temperature=0.0), "--temperature"), (dict(top_k=-1), "--top_k"),
                   (dict(top_k=6), "--top_k"), (dict(top_p=0.0), "--top_p"),
                   (dict(top_p=1.5), "--top_p"), (dict(temperature=math.nan), "--temperature")]:
    args = dict(temperature=1.0, top_k=0, top_p=1.0) | kw
    with pytest.raises(ValueError, match=flag):
      sampling.check(**args, vocab_size=5)
  sampling.check(1.0, 5, 1.0, vocab_size=5)
  with pytest.raises(ValueError, match="--num_samples"):
    sampling.check_flags(10, 1.0, 0, 1.0, 0)


# ------------------------------------------------------------------ batched generation

V = 6


@pytest.fixture(scope="module")
def model():
  m = models.build(dict(cell="lstm", hidden_size=8), V, V, rngs=nnx.Rngs(0))
  m.eval()
  return m


def test_batched_rows_equal_single_row_runs(model):
  keys = sampling.row_keys(7, 4)
  kw = dict(temperature=1.5, top_k=4, top_p=0.95)
  batched = sampling.generate_ids(model, V, np.array([1, 2, 3]), 12, keys, **kw)
  assert batched.shape == (4, 12) and batched.min() >= 0 and batched.max() < V
  for n in range(4):
    single = sampling.generate_ids(model, V, np.array([1, 2, 3]), 12, keys[n:n + 1], **kw)
    assert single[0].tolist() == batched[n].tolist()
  assert len({tuple(row) for row in batched.tolist()}) > 1  # different rows differ


def test_same_seed_same_samples_and_rows_do_not_depend_on_n(model):
  run = lambda seed, n: sampling.generate_ids(model, V, np.array([0]), 10, sampling.row_keys(seed, n))
  assert np.array_equal(run(3, 3), run(3, 3))
  assert np.array_equal(run(3, 5)[:3], run(3, 3))
  assert not np.array_equal(run(3, 3), run(4, 3))


def test_empty_prompt_and_zero_length(model):
  out = sampling.generate_ids(model, V, np.array([], np.int32), 5, sampling.row_keys(0, 2))
  assert out.shape == (2, 5)
  assert sampling.generate_ids(model, V, np.array([1]), 0, sampling.row_keys(0, 2)).shape == (2, 0)


# ---------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  return subprocess.run([sys.executable, "-m", "rnn_research.sample", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("flag,value,range_", [
    ("temperature", "0", "> 0"), ("top_k", "-1", "[0, "), ("top_p", "0", "(0, 1]"),
    ("top_p", "1.5", "(0, 1]"), ("num_samples", "0", ">= 1")])
def test_cli_bad_values_one_line_exit_2(tmp_path, flag, value, range_):
  proc = _cli(f"--workdir={tmp_path}", f"--{flag}={value}")
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "bad input:" in lines[0], proc.stderr
  assert f"--{flag}" in lines[0] and range_ in lines[0], lines[0]
  assert not proc.stdout


# A tiny charlm run, as in test_main.py: 3 steps of a 4-unit model on 16-character windows.
TINY_CHARLM = {"train.steps": 3, "train.batch_size": 4, "model.hidden_size": 4,
               "train.eval_every": 3, "train.log_every": 1, "train.checkpoint_every": 3,
               "train.diagnostics_every": 3, "task.length": 16, "task.eval_windows": 4,
               "task.eval_length": 16}


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory) -> Path:
  workdir = tmp_path_factory.mktemp("charlm") / "run"
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "rnn_research.main", "--config=configs/tasks/charlm.py",
       f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in TINY_CHARLM.items())],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.slow
def test_cli_top_k_above_the_vocabulary(charlm_run):
  proc = _cli(f"--workdir={charlm_run}", "--top_k=100000", "--length=3")
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "bad input:" in lines[0] and "--top_k" in lines[0], proc.stderr
  assert "vocabulary size" in lines[0] and not proc.stdout


@pytest.mark.slow
def test_cli_num_samples_seeded(charlm_run):
  args = (f"--workdir={charlm_run}", "--prompt=ROMEO", "--length=30", "--seed=5",
          "--top_k=20", "--top_p=0.95", "--temperature=1.2")
  three, again, one = _cli(*args, "--num_samples=3"), _cli(*args, "--num_samples=3"), _cli(*args)
  for proc in (three, again, one):
    assert proc.returncode == 0, proc.stderr[-3000:]
  assert three.stdout == again.stdout
  parts = three.stdout.split("--- sample ")
  assert parts[0] == "" and [p.split(" ---\n", 1)[0] for p in parts[1:]] == ["0", "1", "2"]
  texts = [p.split(" ---\n", 1)[1] for p in parts[1:]]
  assert all(t.startswith("ROMEO") for t in texts)
  assert texts[0] == one.stdout  # row 0 does not depend on --num_samples
  assert len(set(texts)) > 1
