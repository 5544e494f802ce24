"""TensorBoard event files written and read without TensorFlow (or jax).

`MetricWriter` writes scalars, images, text and hparams with the `tensorboard` package's
own `EventFileWriter` and protos. Scalars and images use the classic summary fields
(`simple_value`, `Summary.Image`), which every reader understands: the plain
`event_accumulator` lists them under `Scalars()` / `Images()`, while
`plugin_event_accumulator` (what TensorBoard itself uses) migrates them to `Tensors(tag)`
with plugin `scalars` / `images`. Text is a string tensor with plugin `text`.

`read_scalars(logdir)` reads every event file of one run directory back into
`{tag: [(step, value), ...]}` sorted by step; when a restarted run re-logs a step, the
value from the newest file wins (resume is exact, so both are the same anyway).

  with MetricWriter(workdir) as w:
    w.write_scalars(step, {"train/loss": 0.3})
    w.write_images(step, {"grad/dh_norm": norms_LxT}, log=True)
  read_scalars(workdir)["train/loss"]  # [(step, 0.3)]
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

HParamValue = str | float | int | bool
# Heat maps are upsampled (nearest neighbour) to at least this many pixels per side.
MIN_HEATMAP_HEIGHT = 60
MIN_HEATMAP_WIDTH = 240
MAX_CELL_PIXELS = 32
NONFINITE_RGB = (255, 0, 0)  # NaN / inf cells are drawn red


def heatmap_rgb(values: np.ndarray, *, log: bool = False, cmap: str = "viridis") -> np.ndarray:
  """Renders a 2-D float array [H, W] as a uint8 RGB image, each cell a block of pixels.

  Colours span the finite values' min..max (log10 of them if `log`; non-positive
  values then get the lowest colour). Non-finite cells are red.
  """
  import matplotlib  # deferred: only heat maps need it

  x = np.asarray(values, dtype=np.float64)
  if x.ndim != 2 or x.size == 0:
    raise ValueError(f"heat map needs a non-empty 2-D array, got shape {x.shape}")
  finite = np.isfinite(x)
  if log:
    positive = finite & (x > 0)
    floor = x[positive].min() if positive.any() else 1.0
    x = np.log10(np.where(positive, x, floor))
  lo, hi = (x[finite].min(), x[finite].max()) if finite.any() else (0.0, 1.0)
  scaled = np.where(finite, (x - lo) / (hi - lo) if hi > lo else 0.5, 0.0)
  rgb = (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)
  rgb[~finite] = NONFINITE_RGB
  rows = min(MAX_CELL_PIXELS, max(1, math.ceil(MIN_HEATMAP_HEIGHT / x.shape[0])))
  cols = min(MAX_CELL_PIXELS, max(1, math.ceil(MIN_HEATMAP_WIDTH / x.shape[1])))
  return np.repeat(np.repeat(rgb, rows, axis=0), cols, axis=1)


def encode_png(rgb: np.ndarray) -> bytes:
  """PNG bytes of a uint8 [H, W, 3] (or [H, W, 4]) image, encoded in memory."""
  from PIL import Image  # pillow ships with matplotlib

  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
  return buf.getvalue()


def _hparam_value(value: Any) -> HParamValue:
  if isinstance(value, np.generic):
    value = value.item()
  return value if isinstance(value, (str, bool, int, float)) else str(value)


class MetricWriter:
  """Writes one run's TensorBoard event file into `logdir` (created if missing).

  File names carry time, host, pid and a per-process counter, so several writers
  (or restarts) in one directory never collide. Pending events reach the disk at
  least every `flush_secs`, and at once on `flush()` / `close()`.
  """

  def __init__(self, logdir: str, *, flush_secs: float = 5.0) -> None:
    self.logdir = logdir
    self._writer = EventFileWriter(logdir, max_queue_size=100, flush_secs=flush_secs)

  @property
  def path(self) -> str:
    """Path of the event file this writer appends to."""
    return self._writer._file_name  # pylint: disable=protected-access

  def _write(self, step: int, values: Sequence[summary_pb2.Summary.Value]) -> None:
    if values:
      event = event_pb2.Event(wall_time=time.time(), step=int(step))
      event.summary.value.extend(values)
      self._writer.add_event(event)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes each `tag: value` (any float-convertible, stored as float32) at `step`."""
    self._write(step, [summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
                       for tag, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray], *,
                   log: bool = False) -> None:
    """Writes PNG images: uint8 [H, W, 3|4] as is, 2-D float arrays as heat maps.

    `log` draws every heat map of this call on a log10 colour scale.
    """
    values = []
    for tag, image in images.items():
      image = np.asarray(image)
      if image.ndim == 2:
        image = heatmap_rgb(image, log=log)
      elif not (image.ndim == 3 and image.shape[-1] in (3, 4) and image.dtype == np.uint8):
        raise ValueError(f"{tag}: need uint8 [H, W, 3|4] or 2-D floats, "
                         f"got {image.dtype} {image.shape}")
      img = summary_pb2.Summary.Image(
          height=image.shape[0], width=image.shape[1], colorspace=image.shape[2],
          encoded_image_string=encode_png(image))
      values.append(summary_pb2.Summary.Value(tag=tag, image=img))
    self._write(step, values)

  def write_text(self, step: int, name: str, text: str) -> None:
    """Writes `text` (markdown, shown by the Text dashboard) under tag `name`."""
    meta = text_metadata.create_summary_metadata(display_name=name, description="")
    tensor = tensor_util.make_tensor_proto(np.array(text.encode("utf-8"), dtype=object))
    self._write(step, [summary_pb2.Summary.Value(tag=name, metadata=meta, tensor=tensor)])

  def write_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str] = ()) -> None:
    """Records this run's hyperparameters for the HParams dashboard (at step 0).

    Values other than str/bool/int/float are stored as their str(). With no `metrics`
    (recommended for sweeps) TensorBoard infers the experiment from all runs: every
    hparam key seen, hparams that differ between runs first, every scalar tag as a
    metric column. Naming `metrics` (scalar tags, e.g. "eval/loss") also writes an
    experiment summary, which replaces that inference: TensorBoard takes the first
    such summary it finds (so all runs must pass the same keys) and then marks no
    hparam as differing.
    """
    hp = {str(k): _hparam_value(v) for k, v in hparams.items()}
    summaries = [hparams_summary.hparams_pb(hp)]
    if metrics:
      dtype = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING}
      experiment = api_pb2.Experiment(
          time_created_secs=time.time(),
          hparam_infos=[
              api_pb2.HParamInfo(name=k, type=dtype.get(type(v), api_pb2.DATA_TYPE_FLOAT64))
              for k, v in sorted(hp.items())],
          metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics])
      summary = summary_pb2.Summary()
      summary.value.add(
          tag=hparams_metadata.EXPERIMENT_TAG, tensor=hparams_metadata.NULL_TENSOR,
          metadata=hparams_metadata.create_summary_metadata(
              plugin_data_pb2.HParamsPluginData(experiment=experiment)))
      summaries.insert(0, summary)
    self._write(0, [value for s in summaries for value in s.value])

  def flush(self) -> None:
    """Blocks until everything written so far is on disk."""
    self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the file; further writes raise. Safe to call twice."""
    self._writer.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar series of the run in `logdir` (its event files, not subdirectories).

  Returns {tag: [(step, value), ...]} sorted by step ({} if there are none). A step logged
  twice (a restart re-running steps after its checkpoint) keeps the value from the newest event
  file.
  Reads any writer's scalars (this one, tf.summary, tensorboardX) through
  `plugin_event_accumulator`, where they appear as scalar-plugin tensors.
  """
  from tensorboard.backend.event_processing import plugin_event_accumulator as pea

  if not os.path.isdir(logdir):
    raise FileNotFoundError(f"no run directory {logdir}")
  acc = pea.EventAccumulator(logdir, size_guidance={pea.TENSORS: 0})  # 0: keep all
  acc.Reload()
  out: dict[str, list[tuple[int, float]]] = {}
  if scalar_metadata.PLUGIN_NAME not in acc.ActivePlugins():
    return out  # no event files, or none with scalars
  for tag in sorted(acc.PluginTagToContent(scalar_metadata.PLUGIN_NAME)):
    by_step = {e.step: float(tensor_util.make_ndarray(e.tensor_proto).item())
               for e in acc.Tensors(tag)}
    out[tag] = sorted(by_step.items())
  return out
