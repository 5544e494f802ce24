"""TensorBoard event files written and read without TensorFlow (or jax).

`MetricWriter` writes scalars, images, text and hparams with the `tensorboard` package's own
`EventFileWriter` and protos. Scalars and images use the classic summary fields (`simple_value`,
`Summary.Image`), which every reader understands: the plain `event_accumulator` lists them under
`Scalars()` / `Images()`, `plugin_event_accumulator` (what TensorBoard itself uses) migrates
them to `Tensors(tag)` with plugin `scalars` / `images`. Text is a string tensor (plugin `text`).

A resumed run re-runs the steps after its checkpoint; its writer first drops those steps'
events from the older event files (`MetricWriter.truncate_after`), so TensorBoard shows each
step once. HParams trials are named by the run directory, with the metrics the trainer names
(the task's main metric first) as the first columns.
Heat maps are drawn by heatmap.py.

`read_scalars(logdir)` reads every event file of one run directory back into
`{tag: [(step, value), ...]}` sorted by step; a step in two files keeps the newest value.

  with MetricWriter(workdir) as w:
    w.write_scalars(step, {"train/loss": 0.3})
    w.write_images(step, {"grad/dh_norm": norms_LxT}, log=True)
  read_scalars(workdir)["train/loss"]  # [(step, 0.3)]
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import socket
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
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

from rnn_research.training.heatmap import LOG_RANGE, encode_png, heatmap_rgb  # noqa: F401

HParamValue = str | float | int | bool
_OPEN: set[str] = set()  # event files of this process' open writers


def _hparam_value(value: Any) -> HParamValue:
  if isinstance(value, np.generic):
    value = value.item()
  return value if isinstance(value, (str, bool, int, float)) else str(value)


def event_files(logdir: str) -> list[str]:
  """The TensorBoard event files directly in `logdir`, oldest name first."""
  return sorted(glob.glob(os.path.join(glob.escape(logdir), "*tfevents*")))


def _in_use(path: str) -> bool:
  """Whether a live writer still appends to the event file `path`: one of this process, or a
  live process of this host (the name ends in .<host>.<pid>.<counter>)."""
  *_, host, pid, _ = os.path.basename(path).rsplit(".", 3)
  if path in _OPEN or host != socket.gethostname() or not pid.isdigit():
    return path in _OPEN
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except OSError:  # alive, another user's
    pass
  return int(pid) != os.getpid()


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
  """(step, framed record) of each whole record of an event file's bytes. A record is a
  uint64 length, its masked crc32c, the Event bytes and their crc; a torn tail ends it."""
  pos = 0
  while pos + 12 <= len(data):
    end = pos + 16 + struct.unpack("<Q", data[pos:pos + 8])[0]
    if end > len(data):
      return
    try:
      step = event_pb2.Event.FromString(data[pos + 12:end - 4]).step
    except Exception:  # pylint: disable=broad-except  # a torn or corrupt tail
      return
    yield step, data[pos:end]
    pos = end


def truncate_event_file(path: str, step: int) -> int:
  """Drops the events after `step` from the event file `path`; returns how many. The kept
  records are copied byte for byte to a temporary file beside it (no "tfevents" in its name:
  TensorBoard never reads it) that then replaces it, so a reader sees the old or the new."""
  with open(path, "rb") as f:
    data = f.read()
  records = list(_records(data))
  kept = b"".join(r for s, r in records if s <= step)
  if len(kept) == len(data):
    return 0
  tmp = os.path.join(os.path.dirname(path), f".rewind.{secrets.token_hex(4)}.tmp")
  try:
    with open(tmp, "wb") as f:
      f.write(kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return sum(s > step for s, _ in records)


def _sweep_of(logdir: str) -> tuple[set[str], list[str]]:
  """(the config keys the sweep of `logdir` varies, [its declared metric] or []) from the
  parent's sweep.json (the sweep file's get_sweep() and get_metric()); empty outside a sweep."""
  try:
    with open(os.path.join(os.path.dirname(os.path.abspath(logdir)), "sweep.json"),
              encoding="utf-8") as f:
      sweep = json.load(f)
    keys = {k for m in sweep.get("members", []) for k in m.get("overrides", {})}
    return keys, [str(sweep["metric"][0])] if sweep.get("metric") else []
  except (OSError, ValueError, AttributeError, TypeError, IndexError):
    return set(), []


def _experiment(hp: Mapping[str, HParamValue], metrics: Sequence[str],
                differs: set[str]) -> list[summary_pb2.Summary.Value]:
  """The HParams experiment summary: these hparams (`differs` marked) and metric columns."""
  dtype = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING}
  experiment = api_pb2.Experiment(
      time_created_secs=time.time(),
      hparam_infos=[api_pb2.HParamInfo(name=k, type=dtype.get(type(v), api_pb2.DATA_TYPE_FLOAT64),
                                       differs=k in differs) for k, v in sorted(hp.items())],
      metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t))
                    for t in dict.fromkeys(metrics)])
  return [summary_pb2.Summary.Value(
      tag=hparams_metadata.EXPERIMENT_TAG, tensor=hparams_metadata.NULL_TENSOR,
      metadata=hparams_metadata.create_summary_metadata(
          plugin_data_pb2.HParamsPluginData(experiment=experiment)))]


class MetricWriter:
  """Writes one run's TensorBoard event file into `logdir` (created if missing).

  File names carry time, host, pid and a per-process counter, so restarts never collide.
  Pending events reach the disk at least every `flush_secs`, and at once on `flush()` /
  `close()`. A resumed run re-runs the steps after its checkpoint: with `rewind` (default),
  the first event written at a step s >= 1 first drops the events at steps >= s from the
  event files that were there before this writer (`truncate_after`; files a live writer
  still appends to are left alone), so every reader sees each step once.
  """

  def __init__(self, logdir: str, *, flush_secs: float = 5.0, rewind: bool = True) -> None:
    self.logdir = logdir
    os.makedirs(logdir, exist_ok=True)
    self._older = event_files(logdir)  # before the writer makes its own
    self._rewind = rewind
    self._experiment: tuple[dict[str, HParamValue], list[str]] | None = None
    self._writer = EventFileWriter(logdir, max_queue_size=100, flush_secs=flush_secs)
    _OPEN.add(self.path)

  @property
  def path(self) -> str:
    """Path of the event file this writer appends to."""
    return self._writer._file_name  # pylint: disable=protected-access

  def truncate_after(self, step: int) -> int:
    """Drops the events after `step` from the run's event files older than this writer (a
    resumed run's: it re-runs those steps); returns how many. Each file is replaced
    atomically."""
    return sum(truncate_event_file(p, step) for p in self._older
               if os.path.exists(p) and not _in_use(p))

  def _write(self, step: int, values: Sequence[summary_pb2.Summary.Value]) -> None:
    if values:
      if self._rewind and step >= 1:
        self._rewind = False
        self.truncate_after(step - 1)
      event = event_pb2.Event(wall_time=time.time(), step=int(step))
      event.summary.value.extend(values)
      self._writer.add_event(event)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes each `tag: value` (any float-convertible, stored as float32) at `step`."""
    self._write(step, [summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
                       for tag, v in scalars.items()])
    if self._experiment and any(t.startswith("eval/") for t in scalars):
      self._write_experiment(sorted(t for t in scalars if t.startswith("eval/")))

  def write_images(self, step: int, images: Mapping[str, np.ndarray], *,
                   log: bool = False) -> None:
    """Writes PNG images: uint8 [H, W, 3|4] as is, 2-D float arrays as heat maps with a colour
    bar (`heatmap_figure`; `log`: on the fixed log10 scale LOG_RANGE)."""
    values = []
    for tag, image in images.items():
      image = np.asarray(image)
      if image.ndim == 2:
        labels = ("step t", "layer") if tag.startswith("grad_flow/") else ("", "")
        image = heatmap_rgb(image, log=log, labels=labels)
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
    """Records this run's hyperparameters for the HParams dashboard (at step 0), as a trial named
    by the run (the basename of `logdir`: a sweep member's name). Values other than
    str/bool/int/float are stored as their str(). The experiment summary (written at the first
    eval/* write, or at close) lists the sweep's declared metric (sweep.json beside the run,
    from the sweep file's get_metric()), then `metrics` (the trainer gives the task's main
    metric), the eval/* tags written and train/loss; it marks the hparams the sweep varies as
    differing. TensorBoard uses the first one it finds.
    """
    hp = {str(k): _hparam_value(v) for k, v in hparams.items()}
    trial = os.path.basename(os.path.abspath(self.logdir))
    self._write(0, list(hparams_summary.hparams_pb(hp, trial_id=trial).value))
    self._experiment = hp, list(metrics)

  def _write_experiment(self, evals: Sequence[str] = ()) -> None:
    hp, metrics = self._experiment
    self._experiment = None
    swept, declared = _sweep_of(self.logdir)
    self._write(0, _experiment(hp, [*declared, *metrics, *evals, "train/loss"], swept))

  def flush(self) -> None:
    """Blocks until everything written so far is on disk."""
    self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the file; further writes raise. Safe to call twice."""
    if self._experiment:
      self._write_experiment()
    self._writer.close()
    _OPEN.discard(self.path)

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
