"""MetricWriter: real event files, read back the way TensorBoard reads them."""
from __future__ import annotations

import glob
import io
import json
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

from rnn_research.training.heatmap import LOG_RANGE, heatmap_figure
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


def color_count(image: np.ndarray, rgb) -> int:
  """How many pixels of `image` have exactly the colour `rgb`."""
  return int((image[..., :3] == np.asarray(rgb, np.uint8)).all(-1).sum())


VIRIDIS = lambda v: np.asarray(matplotlib.colormaps["viridis"](v, bytes=True))[:3]


def test_images_are_pngs_of_expected_size(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
  grid = np.full((3, 100), 1e-3)
  with MetricWriter(str(tmp_path)) as w:
    w.write_images(4, {"sample/rgb": rgb, "grad_flow/norm": grid}, log=True)
  acc = plugin_acc(tmp_path)
  assert set(acc.PluginTagToContent("images")) == {"sample/rgb", "grad_flow/norm"}
  (event,) = acc.Tensors("sample/rgb")
  assert event.step == 4
  np.testing.assert_array_equal(decode_png(event.tensor_proto), rgb)
  heat = decode_png(acc.Tensors("grad_flow/norm")[0].tensor_proto)
  assert heat.shape[0] >= 150 and heat.shape[1] >= 600 and heat.shape[2] in (3, 4)
  # 1e-3 is mid-way on the fixed scale 1e-8 .. 1e2: a large block of the middle colour.
  assert color_count(heat, VIRIDIS(0.5)) > 0.3 * heat.shape[0] * heat.shape[1]
  # The legacy reader sees them as images too.
  legacy = plain_ea.EventAccumulator(str(tmp_path))
  legacy.Reload()
  (image,) = legacy.Images("grad_flow/norm")
  assert (image.width, image.height) == (heat.shape[1], heat.shape[0])


def test_log_heatmaps_share_one_fixed_scale_with_a_colour_bar():
  """The same value has the same colour in every image, whatever the image's own range."""
  low, high = np.array([[1e-3, 1e-6]]), np.array([[1e-3, 1e1]])
  a, b = heatmap_rgb(low, log=True), heatmap_rgb(high, log=True)
  assert a.shape == b.shape and a.dtype == np.uint8
  cell = a.shape[0] * a.shape[1] // 10
  for image in (a, b):  # 1e-3: log10 -3 of [-8, 2], mid-way
    assert color_count(image, VIRIDIS(0.5)) > cell
  assert color_count(a, VIRIDIS(0.2)) > cell  # 1e-6
  assert color_count(b, VIRIDIS(0.9)) > cell  # 1e1
  # The colour bar, drawn into the image: bottom to top, the whole scale (viridis 0 .. 255).
  fig = heatmap_figure(low, log=True)
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
  np.testing.assert_array_equal(image, a)
  bar = fig.axes[1]
  box = bar.get_window_extent()
  rows = range(image.shape[0] - int(box.y1) + 2, image.shape[0] - int(box.y0) - 2)
  lut = np.array([VIRIDIS(i / 255) for i in range(256)], int)
  index = [int(np.abs(lut - image[r, int(box.x0 + box.x1) // 2]).sum(1).argmin()) for r in rows]
  assert index[0] > 245 and index[-1] < 10 and all(np.diff(index) <= 1)
  assert [t.get_text() for t in bar.get_yticklabels()] == [f"1e{k}" for k in range(-8, 3)]
  assert bar.get_ylim() == pytest.approx(LOG_RANGE)


@pytest.mark.parametrize("shape", [(1, 150), (3, 40), (20, 7)])
def test_heatmaps_redrawn_over_a_cached_frame_equal_whole_drawings(shape):
  """On a fixed range only the cells are redrawn: the pixels equal a drawing from scratch, and
  the previous image's cells do not survive into the next."""
  rng = np.random.default_rng(shape[0])
  def whole(x, **kw):
    fig = heatmap_figure(x, **kw)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3]

  for kw in ({"log": True, "labels": ("step t", "layer")}, {"vrange": (-1.0, 1.0)}):
    for _ in range(3):
      x = 10.0 ** rng.uniform(-10, 4, shape) * rng.choice([-1, 1], shape)
      x.flat[rng.integers(x.size)] = np.nan
      np.testing.assert_array_equal(heatmap_rgb(x, **kw), whole(x, **kw))


def test_heatmap_clips_and_marks_nonfinite():
  x = np.array([[1e-20, 0.0, 1e9], [np.nan, np.inf, -np.inf]])
  img = heatmap_rgb(x, log=True)
  cell = img.shape[0] * img.shape[1] // 20
  assert color_count(img, [255, 0, 0]) > 2 * cell  # NaN, inf and -inf: red, not an error
  assert color_count(img, VIRIDIS(0.0)) > 2 * cell  # 1e-20 and 0: below the scale, lowest
  assert color_count(img, VIRIDIS(1.0)) > cell      # 1e9: above it, highest
  linear = heatmap_rgb(np.array([[1.0, 2.0, 3.0]]))  # without log: its own min..max
  assert color_count(linear, VIRIDIS(0.5)) > linear.shape[0] * linear.shape[1] // 10
  with pytest.raises(ValueError, match="2-D"):
    heatmap_rgb(np.zeros(3))


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


def hparams_content(logdir) -> tuple:
  """(session start info, experiment or None) as TensorBoard's hparams plugin reads them."""
  content = plugin_acc(logdir).PluginTagToContent(hp_metadata.PLUGIN_NAME)
  start = hp_metadata.parse_session_start_info_plugin_data(
      content[hp_metadata.SESSION_START_INFO_TAG])
  experiment = content.get(hp_metadata.EXPERIMENT_TAG)
  return start, experiment and hp_metadata.parse_experiment_plugin_data(experiment)


def test_hparams_name_the_trial_by_its_run_and_put_the_main_metric_first(tmp_path):
  run = tmp_path / "norm=layer,seed=2"
  (tmp_path / "sweep.json").write_text(json.dumps({"members": [
      {"name": "norm=layer,seed=2", "overrides": {"model.norm": "layer", "train.seed": 2}}]}))
  hparams = {"model.norm": "layer", "train.lr": 0.01, "model.layers": 2, "train.seed": np.int64(2),
             "use_clip": True, "extra": None, "task.name": "kalman"}
  with MetricWriter(str(run)) as w:
    w.write_hparams(hparams, ["eval/mse_over_kalman"])
    w.write_scalars(1, {"train/loss": 0.9})
    w.write_scalars(10, {"eval/loss": 0.5, "eval/mse": 0.5, "eval/kalman_mse": 0.4,
                         "eval/mse_over_kalman": 1.25})
  start, experiment = hparams_content(run)
  assert start.group_name == "norm=layer,seed=2"  # not a hash of the values
  assert start.hparams["model.norm"].string_value == "layer"
  assert start.hparams["train.lr"].number_value == 0.01
  assert start.hparams["train.seed"].number_value == 2
  assert start.hparams["use_clip"].bool_value is True
  assert start.hparams["extra"].string_value == "None"
  assert [m.name.tag for m in experiment.metric_infos] == [
      "eval/mse_over_kalman", "eval/kalman_mse", "eval/loss", "eval/mse", "train/loss"]
  assert {h.name for h in experiment.hparam_infos} == set(hparams)
  assert {h.name for h in experiment.hparam_infos if h.differs} == {"model.norm", "train.seed"}


def test_hparams_put_the_metric_the_sweep_file_declares_first(tmp_path):
  """A sweep file's get_metric() (recorded in sweep.json) comes before the task's metric."""
  (tmp_path / "sweep.json").write_text(json.dumps(
      {"members": [{"name": "a", "overrides": {"model.norm": "layer"}}],
       "metric": ["eval/mse", "min"]}))
  with MetricWriter(str(tmp_path / "a")) as w:
    w.write_hparams({"model.norm": "layer"}, ["eval/mse_over_kalman"])
  _, experiment = hparams_content(tmp_path / "a")
  assert [m.name.tag for m in experiment.metric_infos] == [
      "eval/mse", "eval/mse_over_kalman", "train/loss"]


def test_hparams_experiment_is_written_at_close_without_an_eval(tmp_path):
  with MetricWriter(str(tmp_path / "alone")) as w:
    w.write_hparams({"norm": "batch"}, ["eval/bits"])
  start, experiment = hparams_content(tmp_path / "alone")
  assert start.group_name == "alone"
  assert [m.name.tag for m in experiment.metric_infos] == ["eval/bits", "train/loss"]
  assert not any(h.differs for h in experiment.hparam_infos)  # no sweep.json


def legacy_scalars(logdir, tag: str) -> list[tuple[int, float]]:
  acc = plain_ea.EventAccumulator(str(logdir))
  acc.Reload()
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_resume_shows_each_step_once_under_both_loaders(tmp_path):
  """Killed after step 230 with its checkpoint at 200: the rerun of 210..230 replaces them."""
  with MetricWriter(str(tmp_path)) as first:
    first.write_hparams({"task.name": "adding"})
    for step in (100, 200, 210, 220, 230):
      first.write_scalars(step, {"train/loss": float(step)})
    first.write_images(230, {"grad_flow/norm_dL_dh": np.ones((2, 3))}, log=True)
  with MetricWriter(str(tmp_path)) as second:  # resumed at step 200
    second.write_hparams({"task.name": "adding"})
    for step in (210, 220, 230, 240):
      second.write_scalars(step, {"train/loss": -float(step)})
  expected = [(100, 100.0), (200, 200.0), (210, -210.0), (220, -220.0), (230, -230.0),
              (240, -240.0)]
  assert legacy_scalars(tmp_path, "train/loss") == expected  # --load_fast=false
  acc = plugin_acc(tmp_path)
  assert [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
          for e in acc.Tensors("train/loss")] == expected
  assert "images" not in acc.ActivePlugins()  # its only image was at step 230, which re-runs
  assert hparams_content(tmp_path)[0].group_name == tmp_path.name  # step 0 is kept
  assert len(glob.glob(str(tmp_path / "*tfevents*"))) == 2
  assert not glob.glob(str(tmp_path / ".*"))  # no temporary file left


def test_truncate_after_drops_later_steps_and_a_torn_tail(tmp_path):
  with MetricWriter(str(tmp_path)) as w:
    for step in range(1, 6):
      w.write_scalars(step, {"x": float(step)})
  (path,) = glob.glob(str(tmp_path / "*tfevents*"))
  with open(path, "ab") as f:
    f.write(b"\x30\x00\x00\x00\x00")  # a record cut short by a kill
  with MetricWriter(str(tmp_path), rewind=False) as w:
    assert w.truncate_after(3) == 2
    assert w.truncate_after(3) == 0
    w.write_scalars(2, {"y": 1.0})  # rewind=False: nothing else is dropped
  assert read_scalars(str(tmp_path)) == {"x": [(1, 1.0), (2, 2.0), (3, 3.0)], "y": [(2, 1.0)]}
  assert legacy_scalars(tmp_path, "x") == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_module_imports_neither_jax_nor_tensorflow(tmp_path):
  with MetricWriter(str(tmp_path)) as w:
    w.write_scalars(1, {"a": 1.0})
  code = ("import sys; from rnn_research.training.metric_writer import read_scalars; "
          f"assert read_scalars({str(tmp_path)!r}) == {{'a': [(1, 1.0)]}}; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'tensorflow')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == "[]"
