"""MetricWriter: real event files, read back the way TensorBoard reads them."""
from __future__ import annotations

import glob
import io
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as plain_ea
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.util import tensor_util

from rnn_research.training.metric_writer import MetricWriter, heatmap_rgb, read_scalars


def plugin_acc(logdir) -> pea.EventAccumulator:
  acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})
  acc.Reload()
  return acc


def decode_png(tensor_proto) -> np.ndarray:
  width, height, png = tensor_util.make_ndarray(tensor_proto)
  image = np.asarray(Image.open(io.BytesIO(png)))
  assert image.shape[:2] == (int(height), int(width))
  return image


def test_scalars_round_trip(tmp_path):
  with MetricWriter(str(tmp_path)) as w:
    for step in (10, 20, 30):
      w.write_scalars(step, {"train/loss": 1.0 / step, "eval/mse": np.float32(step)})
  expected = [(s, float(np.float32(1.0 / s))) for s in (10, 20, 30)]
  assert read_scalars(str(tmp_path)) == {
      "eval/mse": [(10, 10.0), (20, 20.0), (30, 30.0)], "train/loss": expected}
  # TensorBoard's own reader: scalar-plugin tensors.
  acc = plugin_acc(tmp_path)
  assert set(acc.PluginTagToContent("scalars")) == {"train/loss", "eval/mse"}
  events = acc.Tensors("train/loss")
  assert [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events] == expected
  # The legacy reader lists the same values under Scalars().
  legacy = plain_ea.EventAccumulator(str(tmp_path))
  legacy.Reload()
  assert [(e.step, e.value) for e in legacy.Scalars("train/loss")] == expected


def test_flush_makes_values_visible_before_close(tmp_path):
  w = MetricWriter(str(tmp_path))
  w.write_scalars(1, {"a": 2.0})
  w.flush()
  assert read_scalars(str(tmp_path)) == {"a": [(1, 2.0)]}
  w.close()
  w.close()  # idempotent
  with pytest.raises(IOError):
    w.write_scalars(2, {"a": 3.0})


def test_read_scalars_of_empty_and_missing_dirs(tmp_path):
  assert read_scalars(str(tmp_path)) == {}
  with MetricWriter(str(tmp_path)) as w:
    w.write_text(0, "note", "no scalars here")
  assert read_scalars(str(tmp_path)) == {}
  with pytest.raises(FileNotFoundError):
    read_scalars(str(tmp_path / "missing"))


def test_two_writers_in_one_dir_do_not_collide(tmp_path):
  a, b = MetricWriter(str(tmp_path)), MetricWriter(str(tmp_path))
  a.write_scalars(1, {"train/loss": 1.0})
  b.write_scalars(1, {"eval/loss": 2.0})
  a.close()
  b.close()
  assert a.path != b.path
  assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 2
  assert read_scalars(str(tmp_path)) == {"eval/loss": [(1, 2.0)], "train/loss": [(1, 1.0)]}


def test_restart_overlap_keeps_newest_value_per_step(tmp_path):
  with MetricWriter(str(tmp_path)) as first:
    first.write_scalars(1, {"x": 1.0})
    first.write_scalars(2, {"x": 2.0})
    first.write_scalars(3, {"x": 3.0})   # after the last checkpoint: re-run below
  with MetricWriter(str(tmp_path)) as second:  # resumed from step 2
    second.write_scalars(3, {"x": 30.0})
    second.write_scalars(4, {"x": 40.0})
  assert read_scalars(str(tmp_path)) == {"x": [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]}


def test_images_are_pngs_of_expected_size(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
  grid = np.arange(300, dtype=np.float64).reshape(3, 100) + 1.0
  with MetricWriter(str(tmp_path)) as w:
    w.write_images(4, {"sample/rgb": rgb, "grad_flow/norm": grid}, log=True)
  acc = plugin_acc(tmp_path)
  assert set(acc.PluginTagToContent("images")) == {"sample/rgb", "grad_flow/norm"}
  (event,) = acc.Tensors("sample/rgb")
  assert event.step == 4
  np.testing.assert_array_equal(decode_png(event.tensor_proto), rgb)
  heat = decode_png(acc.Tensors("grad_flow/norm")[0].tensor_proto)
  assert heat.shape == (60, 300, 3)  # 3 rows x 20 px, 100 columns x 3 px
  viridis = (matplotlib.colormaps["viridis"]([0.0, 1.0])[:, :3] * 255).round()
  np.testing.assert_array_equal(heat[0, 0], viridis[0])    # smallest value
  np.testing.assert_array_equal(heat[-1, -1], viridis[1])  # largest value
  # The legacy reader sees them as images too.
  legacy = plain_ea.EventAccumulator(str(tmp_path))
  legacy.Reload()
  (image,) = legacy.Images("grad_flow/norm")
  assert (image.width, image.height) == (300, 60)


def test_heatmap_scales_and_marks_nonfinite():
  x = np.array([[1.0, 10.0, 100.0], [np.nan, np.inf, 0.0]])
  img = heatmap_rgb(x, log=True)
  # 2 rows x 30 px reach the 60 px minimum; columns stop at 32 px per cell.
  assert img.dtype == np.uint8 and img.shape == (60, 96, 3)
  cell = lambda r, c: img[r * 30, c * 32]
  viridis = (matplotlib.colormaps["viridis"]([0.0, 0.5, 1.0])[:, :3] * 255).round()
  np.testing.assert_array_equal(cell(0, 1), viridis[1])  # log10: 10 is mid-way
  np.testing.assert_array_equal(cell(1, 0), [255, 0, 0])
  np.testing.assert_array_equal(cell(1, 1), [255, 0, 0])
  np.testing.assert_array_equal(cell(1, 2), viridis[0])  # non-positive under log: lowest
  big = heatmap_rgb(np.zeros((500, 1000)))  # constant, large: no upsampling
  assert big.shape == (500, 1000, 3)


def test_bad_image_raises(tmp_path):
  with MetricWriter(str(tmp_path)) as w, pytest.raises(ValueError, match="bad"):
    w.write_images(0, {"bad": np.zeros((4, 4, 3), np.float32)})


def test_text_round_trip(tmp_path):
  text = "config: `norm=batch`\n\nnon-ASCII ✓"
  with MetricWriter(str(tmp_path)) as w:
    w.write_text(7, "config", text)
  acc = plugin_acc(tmp_path)
  assert "config" in acc.PluginTagToContent("text")
  (event,) = acc.Tensors("config")
  assert event.step == 7
  assert tensor_util.make_ndarray(event.tensor_proto).item().decode("utf-8") == text


def test_hparams_are_listed_for_the_dashboard(tmp_path):
  hparams = {"model.cell": "lstm", "train.lr": 0.01, "model.layers": 2, "seed": np.int64(1),
             "use_clip": True, "extra": None}
  with MetricWriter(str(tmp_path)) as w:
    w.write_hparams(hparams, ["eval/loss"])
    w.write_scalars(1, {"eval/loss": 0.5})
  content = plugin_acc(tmp_path).PluginTagToContent(hp_metadata.PLUGIN_NAME)
  start = hp_metadata.parse_session_start_info_plugin_data(
      content[hp_metadata.SESSION_START_INFO_TAG])
  assert start.hparams["model.cell"].string_value == "lstm"
  assert start.hparams["train.lr"].number_value == 0.01
  assert start.hparams["seed"].number_value == 1
  assert start.hparams["use_clip"].bool_value is True
  assert start.hparams["extra"].string_value == "None"
  experiment = hp_metadata.parse_experiment_plugin_data(content[hp_metadata.EXPERIMENT_TAG])
  assert [m.name.tag for m in experiment.metric_infos] == ["eval/loss"]
  assert {h.name for h in experiment.hparam_infos} == set(hparams)


def test_hparams_without_metrics_leave_the_experiment_to_tensorboard(tmp_path):
  with MetricWriter(str(tmp_path)) as w:
    w.write_hparams({"norm": "batch"})
  content = plugin_acc(tmp_path).PluginTagToContent(hp_metadata.PLUGIN_NAME)
  assert set(content) == {hp_metadata.SESSION_START_INFO_TAG}


def test_module_imports_neither_jax_nor_tensorflow(tmp_path):
  with MetricWriter(str(tmp_path)) as w:
    w.write_scalars(1, {"a": 1.0})
  code = ("import sys; from rnn_research.training.metric_writer import read_scalars; "
          f"assert read_scalars({str(tmp_path)!r}) == {{'a': [(1, 1.0)]}}; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == "[]"
