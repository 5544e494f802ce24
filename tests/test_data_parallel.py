"""Data-parallel training (`config.train.data_parallel`, `rnn_research.training.data_parallel`) on two
CPU devices (`--xla_force_host_platform_device_count=2`): the same losses and metrics as on one
device, batch norm's statistics over the whole batch, batches really split over the devices
(also the batch axis 1 of a vmapped seed group), and a batch that does not split is refused.

The devices are made in a subprocess (XLA_FLAGS must be set before jax starts); it writes what
it measured to a JSON file that the tests read.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# One subprocess with two fake CPU devices trains whole runs: the slow set.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8
STEPS = 10

SCRIPT = '''
import json, os, sys
import jax
import numpy as np
from configs import default
from rnn_research.training import data_parallel, train
from rnn_research.training.metric_writer import read_scalars

out_dir = sys.argv[1]
calls = []
_shard = data_parallel.shard_batch


def recording_shard(mesh, batch, axis=0):
  sharded = _shard(mesh, batch, axis)
  calls.append({k: {"devices": len(v.sharding.device_set),
                    "shards": [list(s.data.shape) for s in v.addressable_shards],
                    "shape": list(v.shape)} for k, v in sharded.items()})
  return sharded


data_parallel.shard_batch = recording_shard  # train.py calls it through the module


def config(norm, dp, seed=0):
  c = default.for_task("kalman", cell="lstm", hidden_size=8, steps=STEPS, batch_size=BATCH)
  c.task.length, c.task.eval_size = 10, 8
  c.model.norm = norm
  t = c.train
  t.log_every, t.eval_every, t.checkpoint_every, t.diagnostics_every = 1, 5, STEPS, STEPS
  t.seed, t.data_parallel = seed, dp
  return c


result = {"devices": len(jax.devices()), "runs": {}}
for norm in ("none", "batch"):
  for dp in (False, True):
    name = f"{norm}-{dp}"
    calls.clear()
    workdir = os.path.join(out_dir, name)
    metrics = train.train_and_evaluate(config(norm, dp), workdir)
    result["runs"][name] = {"metrics": [metrics], "scalars": [read_scalars(workdir)],
                            "calls": list(calls)}
for dp in (False, True):  # a vmapped group of two seeds: the batch axis is axis 1
  name = f"group-{dp}"
  calls.clear()
  workdirs = [os.path.join(out_dir, name, str(s)) for s in (0, 1)]
  metrics = train.train_seeds([config("none", dp, s) for s in (0, 1)], workdirs)
  result["runs"][name] = {"metrics": metrics, "scalars": [read_scalars(w) for w in workdirs],
                          "calls": list(calls)}

mesh = data_parallel.batch_mesh(BATCH)
host = np.arange(BATCH * 3 * 2, dtype=np.float32).reshape(BATCH, 3, 2)
x = _shard(mesh, {"x": host})["x"]
result["shard"] = {
    "devices": len(x.sharding.device_set),
    "shapes": [list(s.data.shape) for s in x.addressable_shards],
    "rows": sorted(np.asarray(s.data)[:, 0, 0].tolist() for s in x.addressable_shards),
    "same": bool(np.array_equal(np.asarray(x), host))}
x1 = _shard(mesh, {"x": host.transpose(1, 0, 2)}, axis=1)["x"]
result["shard_axis1"] = [list(s.data.shape) for s in x1.addressable_shards]
replicated = data_parallel.replicate(mesh, {"w": np.ones((3, 2), np.float32)})["w"]
result["replicated"] = [list(s.data.shape) for s in replicated.addressable_shards]
errors = []
for batch in (BATCH - 1, 3):
  try:
    data_parallel.batch_mesh(batch)
    errors.append(None)
  except ValueError as err:
    errors.append(str(err))
result["errors"] = errors
bad = config("none", True)
bad.train.batch_size = BATCH - 1
try:
  train.train_and_evaluate(bad, os.path.join(out_dir, "bad"))
  result["train_error"] = None
except ValueError as err:
  result["train_error"] = str(err)
result["bad_written"] = sorted(os.listdir(os.path.join(out_dir, "bad"))) if os.path.isdir(
    os.path.join(out_dir, "bad")) else []
with open(os.path.join(out_dir, "result.json"), "w") as f:
  json.dump(result, f)
'''


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
  """What the two-device subprocess measured (result.json as a dict)."""
  out = tmp_path_factory.mktemp("data_parallel")
  script = out / "script.py"
  script.write_text(f"STEPS, BATCH = {STEPS}, {BATCH}\n" + SCRIPT)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  proc = subprocess.run([sys.executable, str(script), str(out)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads((out / "result.json").read_text())


def curve(run: dict, k: int, tag: str = "train/loss") -> tuple[list[int], np.ndarray]:
  series = run["scalars"][k][tag]
  return [s for s, _ in series], np.array([v for _, v in series])


def test_two_devices(measured):
  assert measured["devices"] == 2


@pytest.mark.parametrize("name", ["none", "batch", "group"])
def test_data_parallel_trains_the_same_function(measured, name):
  one, two = measured["runs"][f"{name}-False"], measured["runs"][f"{name}-True"]
  assert len(one["metrics"]) == len(two["metrics"]) >= 1
  for k in range(len(one["metrics"])):
    steps, single = curve(one, k)
    steps2, sharded = curve(two, k)
    assert steps == steps2 == list(range(1, STEPS + 1))
    assert np.ptp(single) > 1e-3  # the loss moves: the comparison is not trivial
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)
    _, eval_one = curve(one, k, "eval/loss")
    _, eval_two = curve(two, k, "eval/loss")
    np.testing.assert_allclose(eval_two, eval_one, rtol=1e-5, atol=1e-6)
    assert one["metrics"][k].keys() == two["metrics"][k].keys()
    for key, value in one["metrics"][k].items():
      assert two["metrics"][k][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
  if name == "group":  # the two seeds differ: each member got its own data and init
    assert one["metrics"][0]["loss"] != one["metrics"][1]["loss"]


def test_batch_norm_run_differs_from_no_norm(measured):
  # the batch-norm case really has batch norm in it (else it would prove nothing extra)
  _, none = curve(measured["runs"]["none-True"], 0)
  _, batch = curve(measured["runs"]["batch-True"], 0)
  assert not np.allclose(none, batch, rtol=1e-3)


@pytest.mark.parametrize("name", ["none", "batch", "group"])
def test_every_step_splits_its_batch_over_both_devices(measured, name):
  assert measured["runs"][f"{name}-False"]["calls"] == []  # one device: nothing sharded
  calls = measured["runs"][f"{name}-True"]["calls"]
  assert len(calls) == STEPS
  axis = 1 if name == "group" else 0
  for call in calls:
    assert "x" in call
    for array in call.values():
      assert array["devices"] == 2
      assert array["shape"][axis] == BATCH
      assert len(array["shards"]) == 2
      for shard in array["shards"]:
        expected = list(array["shape"])
        expected[axis] = BATCH // 2
        assert shard == expected


def test_shard_batch_splits_rows_in_order(measured):
  shard = measured["shard"]
  assert shard["devices"] == 2
  assert shard["shapes"] == [[BATCH // 2, 3, 2]] * 2
  assert shard["rows"] == [[0.0, 6.0, 12.0, 18.0], [24.0, 30.0, 36.0, 42.0]]
  assert shard["same"]
  assert measured["shard_axis1"] == [[3, BATCH // 2, 2]] * 2
  assert measured["replicated"] == [[3, 2]] * 2


def test_batch_not_divisible_by_devices_is_refused(measured):
  for batch, error in zip((BATCH - 1, 3), measured["errors"]):
    assert error is not None
    assert f"batch_size={batch}" in error and "2 devices" in error
  error = measured["train_error"]  # and so does training with such a config
  assert error is not None and f"batch_size={BATCH - 1}" in error and "2 devices" in error


def test_batch_not_divisible_is_refused_before_writing(measured):
  assert measured["train_error"] is not None
  assert measured["bad_written"] == []
