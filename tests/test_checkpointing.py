"""Checkpointer: bit-exact round trips, fallback past corrupt steps, killed saves ignored."""
from __future__ import annotations

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_research.training.checkpointing import (Checkpointer, CheckpointsUnreadableError,
                                                 short_reason)


def make_state(seed: int = 0) -> dict:
  """A trainer-like state: params, a stepped adam state, ints, numpy scalars, a key."""
  rng = np.random.default_rng(seed)
  params = {"cell": {"w": jnp.asarray(rng.normal(size=(3, 8)), jnp.float32),
                     "b": jnp.asarray(rng.normal(size=(8,)), jnp.bfloat16)},
            "readout": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: p * 0.5 + 1e-3, params)
  _, opt_state = tx.update(grads, opt_state, params)
  return {"params": params, "opt_state": opt_state, "step": 10 + seed,
          "data_position": np.int64(1234 + seed), "ema_loss": np.float32(0.125 + seed),
          "rng": jax.random.key(seed), "mask": np.arange(4) % 2 == 0}


def zeros_like(state: dict) -> dict:
  def zero(x):
    if isinstance(x, int):
      return 0
    if isinstance(x, np.generic):
      return type(x)(0)
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.key(99)
    return jnp.zeros_like(x) if isinstance(x, jax.Array) else np.zeros_like(x)
  return jax.tree.map(zero, state)


def assert_bit_exact(restored, expected):
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  for r, e in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    assert type(r) is type(e), (type(r), type(e))
    if isinstance(e, jax.Array) and jnp.issubdtype(e.dtype, jax.dtypes.prng_key):
      r, e = jax.random.key_data(r), jax.random.key_data(e)
    r, e = np.asarray(r), np.asarray(e)
    assert r.dtype == e.dtype and r.shape == e.shape
    assert r.tobytes() == e.tobytes()


@pytest.fixture
def ckpt_dir(tmp_path):
  return str(tmp_path / "workdir" / "checkpoints")


def test_no_checkpoint_restores_none_and_creates_nothing(ckpt_dir):
  with Checkpointer(ckpt_dir) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.restore(make_state()) is None
  assert not os.path.exists(ckpt_dir)


def test_round_trip_is_bit_exact(ckpt_dir):
  state = make_state()
  with Checkpointer(ckpt_dir) as ckpt:
    assert ckpt.save(10, state)
  assert os.path.isdir(os.path.join(ckpt_dir, "10"))  # complete on disk when save returns
  with Checkpointer(ckpt_dir) as ckpt:  # a fresh process's view
    assert ckpt.latest_step() == 10
    step, restored = ckpt.restore(zeros_like(state))
  assert step == 10
  assert_bit_exact(restored, state)
  assert isinstance(restored["opt_state"][1][0], optax.ScaleByAdamState)


def test_restore_into_abstract_target(ckpt_dir):
  state = make_state()
  with Checkpointer(ckpt_dir) as ckpt:
    ckpt.save(1, state)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if isinstance(x, jax.Array) else x,
        state)
    step, restored = ckpt.restore(abstract)
  assert step == 1
  assert_bit_exact(restored, state)


def test_keeps_newest_and_skips_existing_steps(ckpt_dir):
  with Checkpointer(ckpt_dir, max_to_keep=2) as ckpt:
    for step in (1, 2, 3, 4):
      assert ckpt.save(step, make_state(step))
    assert ckpt.all_steps() == [3, 4]
    assert not ckpt.save(4, make_state(0))              # exists: not overwritten
    assert not ckpt.save(4, make_state(0), force=True)
    assert not ckpt.save(2, make_state(0), force=True)  # older: would evict newer ones
    assert ckpt.all_steps() == [3, 4]
    step, restored = ckpt.restore(make_state(0))
  assert step == 4
  assert_bit_exact(restored, make_state(4))


def corrupt(step_dir: str, only_array_data: bool = False) -> int:
  """Overwrites files under `step_dir` with garbage or truncates them.

  `only_array_data` keeps every metadata file intact and damages just the array chunks
  (files in OCDBT `d/` folders), so only reading the values can notice. Returns the
  number of files damaged.
  """
  damaged = 0
  for i, (root, _, files) in enumerate(os.walk(step_dir)):
    if only_array_data and os.path.basename(root) != "d":
      continue
    for j, name in enumerate(files):
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"" if (i + j) % 2 else b"\x00garbage\xff" * 3)
      damaged += 1
  return damaged


# After a failed read of array data, orbax's event loop closes while tensorstore still has
# callbacks queued ("RuntimeError: Event loop is closed", reported as unraisable): noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("only_array_data", [False, True], ids=["every_file", "array_data"])
def test_corrupt_latest_falls_back_with_warning(ckpt_dir, caplog, only_array_data):
  with Checkpointer(ckpt_dir) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, make_state(step))
  assert corrupt(os.path.join(ckpt_dir, "3"), only_array_data) > 0
  with Checkpointer(ckpt_dir) as ckpt, caplog.at_level(logging.WARNING):
    step, restored = ckpt.restore(make_state(0))
    assert step == 2
    assert_bit_exact(restored, make_state(2))
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "rnn_research.training.checkpointing"]
    assert len(warnings) == 1 and "step 3" in warnings[0] and "\n" not in warnings[0]
    assert os.path.isdir(os.path.join(ckpt_dir, "3"))  # kept for inspection
    # Resuming from 2 and saving step 3 again moves the corrupt one aside (not deleted).
    assert ckpt.save(3, make_state(33))
    step, restored = ckpt.restore(make_state(0))
  assert step == 3
  assert_bit_exact(restored, make_state(33))
  assert [n for n in os.listdir(ckpt_dir) if n.startswith("3.unreadable-")]


def test_all_corrupt_raises_and_deletes_nothing(ckpt_dir):
  with Checkpointer(ckpt_dir) as ckpt:
    for step in (1, 2):
      ckpt.save(step, make_state(step))
  for step in (1, 2):
    corrupt(os.path.join(ckpt_dir, str(step)))
  before = sorted(os.listdir(ckpt_dir))
  with Checkpointer(ckpt_dir) as ckpt:
    with pytest.raises(CheckpointsUnreadableError, match=r"step 2: .*step 1: "):
      ckpt.restore(make_state(0))
  assert sorted(os.listdir(ckpt_dir)) == before


def test_wrong_target_structure_is_a_clear_error(ckpt_dir):
  with Checkpointer(ckpt_dir) as ckpt:
    ckpt.save(1, make_state())
    with pytest.raises(CheckpointsUnreadableError, match="step 1"):
      ckpt.restore({"params": make_state()["params"]})


def test_leftover_tmp_dir_from_killed_save_is_ignored(ckpt_dir):
  with Checkpointer(ckpt_dir) as ckpt:
    ckpt.save(1, make_state(1))
    ckpt.save(2, make_state(2))
  # A save of step 3 killed mid-write: orbax's temporary name, half the files.
  tmp = os.path.join(ckpt_dir, "3.orbax-checkpoint-tmp-1700000000000000")
  shutil.copytree(os.path.join(ckpt_dir, "2"), tmp)
  os.remove(os.path.join(tmp, "_CHECKPOINT_METADATA"))
  corrupt(os.path.join(tmp, "default"))
  with Checkpointer(ckpt_dir) as ckpt:
    assert ckpt.latest_step() == 2
    step, restored = ckpt.restore(make_state(0))
    assert step == 2
    assert_bit_exact(restored, make_state(2))
    assert ckpt.save(3, make_state(3))  # the rerun of the killed save succeeds
    assert ckpt.restore(make_state(0))[0] == 3
  assert os.path.isdir(tmp)  # left alone: it might belong to a live writer


def test_short_reason_drops_tensorstore_specs():
  spec = '{\\"driver\\":\\"zarr\\",\\"kvstore\\":{\\"path\\":\\"/x/checkpoints/3/default/\\"}}' * 5
  error = ValueError(
      'OUT_OF_RANGE: Error opening "zarr" driver: Error reading "params.w/.zarray" in OCDBT '
      'database at local file "/x/checkpoints/3/default/": Requested byte range [0, 6023) is '
      f"not valid for value of size 9 [tensorstore_spec[1]='{spec}'] [tensorstore_spec='{spec}']")
  reason = short_reason(error)
  assert reason == ("ValueError: Requested byte range [0, 6023) is not valid for value of "
                    "size 9")
  assert short_reason(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")) == (
      "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start "
      "byte")


@pytest.mark.parametrize("max_to_keep", [0, -1])
def test_max_to_keep_must_be_positive(ckpt_dir, max_to_keep):
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(ckpt_dir, max_to_keep=max_to_keep)
  from configs import default
  from rnn_research.training import train

  config = default.get_config()
  with config.unlocked():
    config.train.max_to_keep = max_to_keep
  with pytest.raises(ValueError, match=r"config\.train\.max_to_keep must be a positive integer"):
    train.init_state(config)
  assert not os.path.exists(ckpt_dir)
