"""Per-step errors for a report section on `kalman`: where in the sequence a trained filter
loses to the exact Kalman filter (the start-up, while the gain still changes, or the steady
state), beside the fixed-gain filter and the RTS smoother on the same held-out sequences.

Per time step t, over the held-out sequences b and state coordinates i, with weights w_{b,t}:

  MSE_t = sum_b w_{b,t} mean_i (est_{b,t,i} - x_{b,t,i})^2 / W_t,   W_t = sum_b w_{b,t}

so that the task's pooled `mse` is sum_t W_t MSE_t / sum_t W_t. A ratio over a set S of steps
is sum_{t in S} W_t MSE_t / sum_{t in S} W_t MSE^kalman_t: over t < startup_steps, t >=
startup_steps and all t it is the run's `mse_over_kalman_start`, `_steady` and
`mse_over_kalman` (as logged at its last eval, when the latest checkpoint is that step's).
The model's predictions come from the trainer's own eval path (`train.make_predict`,
`loop.evaluate`). matplotlib is imported when the figure is drawn.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from rnn_research.experiments import compare
from rnn_research.training import atomic, loop, run_loader, train

CURVES = ("model", "kalman", "fixed_gain", "rts")  # per_step_mse's curves, besides `weight`
LABELS = {"fixed_gain": "fixed-gain filter", "rts": "RTS smoother (sees the future)"}


def predictions(model: nnx.Module, task: Any) -> np.ndarray:
  """The model's outputs ys [B, T, n] (float32) on the held-out set `task._eval`, made as the
  trainer's eval makes them: `train.make_predict` run by `loop.evaluate` over
  `task.eval_batches()`, padding rows dropped."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  state = {"params": params.to_pure_dict(), "rest": rest.to_pure_dict()}
  predict, outs = train.make_predict(graphdef, state), []

  def recorded(*args: Any) -> np.ndarray:
    outs.append(np.asarray(predict(*args), np.float32))
    return outs[-1]

  loop.evaluate(task, recorded, state)  # task.evaluate: every eval batch, in order
  return np.concatenate(outs)[:task.eval_size]


def step_mse(est: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
  """MSE_t [T] (float64) of estimates est [B, T, n] against data["y"] [B, T, n], weighted by
  data["weight"] [B, T]; NaN at a step without weight."""
  err = np.mean(np.square(np.asarray(est, np.float64) - np.asarray(data["y"], np.float64)), -1)
  weight = np.asarray(data["weight"], np.float64)
  total = weight.sum(0)
  return np.where(total > 0, (weight * err).sum(0) / np.where(total > 0, total, 1.0), np.nan)


def per_step_mse(model: nnx.Module, task: Any) -> dict[str, np.ndarray]:
  """MSE_t [T] on the held-out set of a `kalman` task of the model ("model"), the Kalman
  filter ("kalman"), the steady-state filter ("fixed_gain") and the RTS smoother ("rts"),
  and the weight W_t [T] of each step ("weight")."""
  if getattr(task, "name", None) != "kalman":
    raise ValueError(f"per_step_mse needs a kalman task, got {getattr(task, 'name', task)!r}")
  data = task._eval
  curves = {"model": step_mse(predictions(model, task), data),
            "kalman": step_mse(task._kalman, data),
            **{name: step_mse(est, data) for name, est in task._references.items()}}
  return {**curves, "weight": np.asarray(data["weight"], np.float64).sum(0)}


def ratio(curves: dict[str, np.ndarray], name: str, steps: slice = slice(None)) -> float:
  """sum_t W_t MSE^name_t / sum_t W_t MSE^kalman_t over `steps` (NaN where none weigh)."""
  w = curves["weight"][steps]
  num = np.where(w > 0, w * curves[name][steps], 0.0).sum()
  den = np.where(w > 0, w * curves["kalman"][steps], 0.0).sum()
  return float(num / den) if (w > 0).any() and den > 0 else float("nan")


def ratios(curves: dict[str, np.ndarray], startup_steps: int,
           name: str = "model") -> dict[str, float]:
  """The ratio (`ratio`) of `name` over the Kalman filter on the steps t < startup_steps
  ("start"), t >= startup_steps ("steady") and all of them ("overall")."""
  return {"start": ratio(curves, name, slice(None, startup_steps)),
          "steady": ratio(curves, name, slice(startup_steps, None)),
          "overall": ratio(curves, name)}


def run_curves(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(per_step_mse, the resolved task config) of the run in `path`, its latest checkpoint
  evaluated at the run's `train.matmul_precision`."""
  config = run_loader.load_config(path)
  if config.get("task", {}).get("name") != "kalman":
    raise ValueError(f"{path} is not a kalman run (task {config.get('task', {}).get('name')!r})")
  task, model = run_loader.load_model(path, config)
  with jax.default_matmul_precision(config.train.get("matmul_precision", "default")):
    curves = per_step_mse(model, task)
  return curves, task.cfg.to_dict()


def _fmt(value: float) -> str:
  return "—" if np.isnan(value) else f"{value:.4f}"


def figure(directory: str, out_png: str, group_by: list[str] | None = None,
           link: str | None = None) -> str:
  """Per group of the `kalman` sweep in `directory` (grouped as `compare` does), the completed
  run with the lowest `train.seed`: its MSE_t / MSE^kalman_t over t, one line per group, the
  fixed-gain filter's and RTS smoother's ratios dashed, 1.0 (the Kalman filter) and t =
  startup_steps marked; saved as a PNG to `out_png` (its directory created). Returns markdown:
  `![per-step](<link>)` (`link` default: out_png's file name; the report passes the path
  relative to docs/, e.g. report/<key>/per_step.png) and a table of each group's ratios over
  t < startup_steps, t >= startup_steps and all t. A group without a completed run is named
  as such in the table and has no line."""
  drawn: list[tuple[str, str, dict[str, np.ndarray], dict[str, Any]]] = []
  rows = ["| group | run | t < startup | t >= startup | all t |", "|---|---|---|---|---|"]
  for group, run in compare.first_runs(directory, group_by).items():
    if run is None:
      rows.append(f"| {group} | no completed run | — | — | — |")
      continue
    curves, task_cfg = run_curves(run.path)
    r = ratios(curves, task_cfg["startup_steps"])
    rows.append(f"| {group} | `{run.name}` | {_fmt(r['start'])} | {_fmt(r['steady'])} | "
                f"{_fmt(r['overall'])} |")
    drawn.append((group, run.name, curves, task_cfg))
  _plot(drawn, out_png)
  startups = sorted({cfg["startup_steps"] for _, _, _, cfg in drawn})
  note = (f"Ratios of summed MSE over the Kalman filter's; start-up: t < "
          f"{', '.join(map(str, startups)) or 'startup_steps'}.")
  image = f"![per-step]({link if link is not None else os.path.basename(out_png)})"
  return "\n\n".join([image, "\n".join(rows), note])


def _plot(drawn: list[tuple[str, str, dict[str, np.ndarray], dict[str, Any]]],
          path: str) -> None:
  """Draws `figure`'s lines; the references once if every group has the same task config,
  else per group in its colour."""
  import matplotlib  # deferred: only the plot needs it
  matplotlib.use("Agg")
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 5.5), layout="constrained")
  ax = fig.subplots()
  palette = matplotlib.colormaps["tab10" if len(drawn) <= 10 else "tab20"]
  shared = len({json.dumps(cfg, sort_keys=True) for _, _, _, cfg in drawn}) <= 1
  for i, (group, name, curves, _) in enumerate(drawn):
    t = np.arange(len(curves["kalman"]))
    ax.plot(t, curves["model"] / curves["kalman"], color=palette(i % palette.N), lw=2,
            label=f"{group} ({name})")
  for i, (group, _, curves, _) in enumerate(drawn[:1] if shared else drawn):
    t = np.arange(len(curves["kalman"]))
    for ref, style in (("fixed_gain", "--"), ("rts", "-.")):
      ax.plot(t, curves[ref] / curves["kalman"], style, lw=1.2,
              color="gray" if shared else palette(i % palette.N),
              label=LABELS[ref] if shared else f"{group}: {LABELS[ref]}")
  ax.axhline(1.0, color="black", lw=1, label="Kalman filter (optimal)")
  for k, startup in enumerate(sorted({cfg["startup_steps"] for _, _, _, cfg in drawn})):
    ax.axvline(startup, color="black", ls=":", lw=1,
               label="t = startup_steps (start-up: t < startup_steps)" if k == 0 else None)
  ax.set(xlabel="time step t", ylabel="MSE_t / Kalman MSE_t",
         title="Per-step MSE over the Kalman filter's, on the held-out sequences")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
  image = io.BytesIO()
  fig.savefig(image, dpi=100, format="png")
  atomic.write_bytes(path, image.getvalue())
