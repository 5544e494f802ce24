"""Heat maps of 2-D float arrays (the gradient flow's layer x time norms) as RGB images.

Each image carries its colour bar with tick labels. On the log scale every image uses the
same fixed range, LOG_RANGE decades, so that images of different runs and steps compare by
colour; NaN / inf cells are red. matplotlib is imported when an image is drawn. No jax.

With a fixed colour range (log, or `vrange` given) everything but the cells is the same for
every image of one shape, so `heatmap_rgb` draws that frame once per process and afterwards
redraws only the cells over it (matplotlib's blitting): the same pixels as a whole drawing, in
about 5 ms instead of 100 ms, which the trainer saves on every gradient-flow image it logs.
"""
from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np

LOG_RANGE = (-8.0, 2.0)  # decades of every log-scale heat map: one colour scale for all runs
NONFINITE_RGB = (255, 0, 0)  # NaN / inf cells are drawn red


def heatmap_figure(values: np.ndarray, *, log: bool = False,
                   vrange: tuple[float, float] | None = None, labels: tuple[str, str] = ("", ""),
                   cmap: str = "viridis") -> Any:
  """A matplotlib Figure of a 2-D float array [H, W], one cell per value, with a colour bar.

  With `log` the colours show log10 of the values on the fixed range `vrange` (default
  LOG_RANGE, in decades) for every image, so that images of different runs and steps compare;
  values outside it are clipped (0 is below it). Without `log` they span `vrange` or the finite
  values' min..max. NaN / inf cells are red. `labels` are the (x, y) axis labels.
  """
  import matplotlib  # deferred: only heat maps need it
  import matplotlib.ticker
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  cells, lo, hi = _scaled(values, log, vrange)
  colors = matplotlib.colormaps[cmap].with_extremes(bad=np.array(NONFINITE_RGB) / 255)
  fig = Figure(figsize=(7.0, 1.8 + 0.25 * min(cells.shape[0], 16)), dpi=100,
               layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  image = ax.imshow(cells, cmap=colors, vmin=lo, vmax=hi, aspect="auto",
                    interpolation="nearest")
  ax.set(xlabel=labels[0], ylabel=labels[1])
  for axis in (ax.xaxis, ax.yaxis):
    axis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  bar = fig.colorbar(image, ax=ax, extend="both" if log else "neither")
  if log:
    ticks = np.arange(math.ceil(lo), math.floor(hi) + 1)
    bar.set_ticks(ticks, labels=[f"1e{int(t)}" for t in ticks])
  bar.set_label(("log scale, clipped" if log else "linear") + "; red: NaN/inf", fontsize="small")
  return fig


def _scaled(values: np.ndarray, log: bool, vrange: tuple[float, float] | None
            ) -> tuple[np.ma.MaskedArray, float, float]:
  """The cells as drawn: clipped to (lo, hi), log10 with `log`, non-finite masked."""
  x = np.asarray(values, dtype=np.float64)
  if x.ndim != 2 or x.size == 0:
    raise ValueError(f"heat map needs a non-empty 2-D array, got shape {x.shape}")
  finite = np.isfinite(x)
  if log:
    lo, hi = vrange or LOG_RANGE
    with np.errstate(divide="ignore", invalid="ignore"):
      x = np.where(finite & (x > 0), np.log10(np.where(x > 0, x, 1.0)), lo)
  else:
    lo, hi = vrange or ((x[finite].min(), x[finite].max()) if finite.any() else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
  return np.ma.masked_array(np.clip(x, lo, hi), ~finite), lo, hi


@functools.lru_cache(maxsize=8)
def _frame(shape: tuple[int, int], log: bool, vrange: tuple[float, float] | None,
           labels: tuple[str, str]) -> tuple[Any, list[Any], Any]:
  """A drawn heat map of `shape` on a fixed colour range: (figure, the artists drawn over the
  frame (the cells, then the axes' spines, as a whole drawing orders them), the frame
  without them)."""
  fig = heatmap_figure(np.ones(shape), log=log, vrange=vrange, labels=labels)
  fig.canvas.draw()  # constrained layout places the axes here, once
  fig.set_layout_engine("none")
  axes = fig.axes[0]
  front = [axes.images[0], *axes.spines.values()]
  for artist in front:
    artist.set_visible(False)
  fig.canvas.draw()
  background = fig.canvas.copy_from_bbox(fig.bbox)
  for artist in front:
    artist.set_visible(True)
  return fig, front, background


def heatmap_rgb(values: np.ndarray, *, log: bool = False,
                vrange: tuple[float, float] | None = None,
                labels: tuple[str, str] = ("", "")) -> np.ndarray:
  """`heatmap_figure` rendered as a uint8 [H, W, 3] image (on a fixed colour range, by
  redrawing only the cells over a cached frame: the same pixels)."""
  if not log and vrange is None:  # the colour bar follows the values: drawn whole
    fig = heatmap_figure(values, log=log, vrange=vrange, labels=labels)
    fig.canvas.draw()
  else:
    cells, _, _ = _scaled(values, log, vrange)
    fig, front, background = _frame(cells.shape, log, vrange, tuple(labels))
    front[0].set_data(cells)
    fig.canvas.restore_region(background)
    for artist in front:
      fig.axes[0].draw_artist(artist)
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def encode_png(rgb: np.ndarray) -> bytes:
  """PNG bytes of a uint8 [H, W, 3] (or [H, W, 4]) image, encoded in memory."""
  from PIL import Image  # pillow ships with matplotlib

  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
  return buf.getvalue()
