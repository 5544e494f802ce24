"""`python -m rnn_research.compare`: grouping, ranking, statistics, files and errors.

Every sweep here is synthesized: real event files (MetricWriter), config.json, status.json
and sweep.json, written the way the trainer and the sweep runner write them; no training.
"""
from __future__ import annotations

import json
import textwrap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnn_research.experiments import baseline, compare, compare_plot
from rnn_research.training import provenance
from rnn_research.training.metric_writer import MetricWriter
from rnn_research.training.status import write_status

ROOT = Path(__file__).resolve().parents[1]
STEPS = (0, 100, 200, 300)
# norm -> per seed: (eval/loss at STEPS, state or None for no status.json yet).
SWEEP = {
    "none": [([2.0, 0.4, 0.45, 0.5], "completed"),   # best 0.4 before the end
             ([2.0, 1.0, 0.8, 0.7], "completed"),    # never reaches 0.65
             ([2.0, 0.9, 0.6, 0.6], "completed")],
    "layer": [([2.0, 0.5, 0.3, 0.25], "completed"),
              ([2.0, 0.6, 0.4, 0.35], "completed"),
              ([2.0, 0.1, 50.0, float("nan")], "diverged")],  # blew up: counts for nothing
    "batch": [([2.0, 1.2, 1.0, 0.9], "completed"),
              ([], None),                            # just started: no status, no events
              ([2.0, 1.5], "running")],              # in progress: its latest value counts
}


def make_run(root: Path, name: str, config: dict, losses: list[float], state: str | None,
             speeds: list[float] = (10.0,), main_metric: tuple[str, str] | None = None) -> Path:
  """A run directory as the trainer leaves it (eval/accuracy is 1 - eval/loss, kalman's main
  metric eval/mse_over_kalman is 2 * eval/loss)."""
  workdir = root / name
  workdir.mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(config))
  if losses:
    writer = MetricWriter(str(workdir))
    for i, (step, loss) in enumerate(zip(STEPS, losses)):
      scalars = {"eval/loss": loss, "eval/accuracy": 1.0 - loss, "train/loss": loss,
                 "eval/mse_over_kalman": 2 * loss}
      if i < len(speeds):
        scalars["perf/steps_per_sec"] = speeds[i]
      writer.write_scalars(step, scalars)
    writer.close()
  if state is not None:
    metrics = {"loss": losses[-1]} if state == "completed" else None
    if main_metric is None and (config.get("task") or {}).get("name") == "kalman":
      main_metric = ("eval/mse_over_kalman", "min")  # what the trainer records
    extra = {"main_metric": list(main_metric)} if main_metric else {}
    write_status(str(workdir), state=state, step=STEPS[len(losses) - 1], metrics=metrics, **extra)
  return workdir


def config(norm: str, seed: int, cell: str = "gru") -> dict:
  return {"model": {"name": "rnn", "norm": norm, "cell": cell, "hidden_size": 32},
          "task": {"name": "kalman", "length": 50}, "train": {"seed": seed, "steps": 300}}


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
  """The SWEEP above, with sweep.json, plus a moved-aside run to be skipped."""
  members = []
  for norm, runs in SWEEP.items():
    for seed, (losses, state) in enumerate(runs):
      name = f"norm={norm},seed={seed}"
      members.append({"name": name, "overrides": {"model.norm": norm, "train.seed": seed}})
      make_run(tmp_path, name, config(norm, seed), losses, state,
               speeds=[10.0, 20.0, 30.0] if (norm, seed) == ("none", 0) else [40.0])
  (tmp_path / "sweep.json").write_text(json.dumps(
      {"config": "configs/ablations/norm.py", "members": members}))
  make_run(tmp_path, "replaced-20240101-000000", config("zzz", 0), [9.0], "completed")
  make_run(tmp_path, "a.replaced-20240101-000000", config("zzz", 0), [9.0], "completed")
  (tmp_path / "notes").mkdir()  # neither config.json nor status.json
  return tmp_path


def rows_by_group(rows: list[compare.Row]) -> dict[str, compare.Row]:
  return {r.group: r for r in rows}


def test_load_runs_skips_other_dirs_and_tolerates_unstarted(sweep_dir):
  runs = compare.load_runs(str(sweep_dir))
  assert len(runs) == 9
  assert not any(r.name.startswith(("replaced-", "notes")) or ".replaced-" in r.name
                 for r in runs)
  fresh = next(r for r in runs if r.name == "norm=batch,seed=1")
  assert fresh.status == {} and fresh.scalars == {} and fresh.state == "running"
  done = next(r for r in runs if r.name == "norm=none,seed=0")
  assert done.config["model"]["norm"] == "none" and done.status["state"] == "completed"
  assert [s for s, _ in done.scalars["eval/loss"]] == list(STEPS)


def test_default_groups_from_sweep_json_strip_seed(sweep_dir):
  runs = compare.load_runs(str(sweep_dir))
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  groups = compare.group_runs(runs, None, sweep)
  assert sorted(groups) == ["norm=batch", "norm=layer", "norm=none"]
  assert sorted(r.name for r in groups["norm=layer"]) == [
      f"norm=layer,seed={i}" for i in range(3)]


def test_default_groups_without_sweep_json_use_differing_keys(sweep_dir):
  runs = compare.load_runs(str(sweep_dir))
  groups = compare.group_runs(runs, None, None)
  assert sorted(groups) == ["norm=batch", "norm=layer", "norm=none"]
  assert all(len(g) == 3 for g in groups.values())
  # A sweep of seeds only: everything is one group, "base".
  only_seeds = [r for r in runs if r.name.startswith("norm=none")]
  assert list(compare.group_runs(only_seeds, None, None)) == ["base"]


def test_group_by_config_keys(tmp_path):
  for i, (norm, cell) in enumerate([("layer", "gru"), ("layer", "lstm"), ("none", "gru")]):
    make_run(tmp_path, f"run{i}", config(norm, 0, cell), [1.0, 0.5], "completed")
  runs = compare.load_runs(str(tmp_path))
  by_norm = compare.group_runs(runs, ["model.norm"], None)
  assert {k: len(v) for k, v in by_norm.items()} == {"norm=layer": 2, "norm=none": 1}
  both = compare.group_runs(runs, ["model.norm", "model.cell"], None)
  assert sorted(both) == ["norm=layer,cell=gru", "norm=layer,cell=lstm", "norm=none,cell=gru"]
  # Clashing last parts keep their full keys.
  clash = compare.group_runs(runs, ["model.name", "task.name", "model.norm"], None)
  assert "model.name=rnn,task.name=kalman,norm=layer" in clash
  with pytest.raises(ValueError, match="valid model.* keys: model.cell, model.hidden_size"):
    compare.group_runs(runs, ["model.nrom"], None)


def test_ranking_and_statistics_by_hand(sweep_dir):
  runs = compare.load_runs(str(sweep_dir))
  groups = compare.group_runs(runs, None, None)
  rows = compare.summarize(groups, "eval/loss", "min", threshold=0.65)
  assert [r.group for r in rows] == ["norm=layer", "norm=none", "norm=batch"]
  by = rows_by_group(rows)
  # none: finals 0.5, 0.7, 0.6 -> mean 0.6, sample std 0.1; bests 0.4, 0.7, 0.6.
  mean, std = compare.mean_std(by["norm=none"].finals)
  assert mean == pytest.approx(0.6, rel=1e-6) and std == pytest.approx(0.1, rel=1e-5)
  assert compare.mean_std(by["norm=none"].bests)[0] == pytest.approx(1.7 / 3, rel=1e-6)
  # Threshold 0.65: seed 0 at step 100, seed 2 at 200, seed 1 never.
  assert by["norm=none"].reach_steps == [100, 200]
  # layer: the diverged run (0.1 at step 100) gives no final, best or threshold step.
  layer = by["norm=layer"]
  assert layer.finals == pytest.approx([0.25, 0.35]) and layer.states["diverged"] == 1
  assert compare.mean_std(layer.finals) == pytest.approx((0.3, np.std([0.25, 0.35], ddof=1)))
  assert min(layer.bests) == pytest.approx(0.25)
  assert layer.reach_steps == [100, 100]  # 2 of 3: not the diverged one, though it got there
  # batch: a running run's latest value counts; the unstarted one gives nothing.
  batch = by["norm=batch"]
  assert batch.finals == pytest.approx([0.9, 1.5]) and batch.states == {"completed": 1,
                                                                       "running": 2}
  # steps/s: none's runs average 20, 40 and 40.
  assert by["norm=none"].steps_per_sec == pytest.approx(100 / 3)


def test_best_uses_max_for_accuracy(sweep_dir):
  runs = compare.load_runs(str(sweep_dir))
  groups = compare.group_runs(runs, None, None)
  assert compare.resolve_mode("eval/accuracy", "auto") == "max"
  assert compare.resolve_mode("eval/bit_acc", "auto") == "max"
  assert compare.resolve_mode("eval/mse_over_kalman", "auto") == "min"
  rows = compare.summarize(groups, "eval/accuracy", "max", threshold=0.5)
  assert [r.group for r in rows] == ["norm=layer", "norm=none", "norm=batch"]
  none = rows_by_group(rows)["norm=none"]
  assert none.bests == pytest.approx([0.6, 0.3, 0.4])  # 1 - min loss, not 1 - final loss
  assert none.reach_steps == [100]  # accuracy >= 0.5 only for seed 0 (0.6 at step 100)
  # The same series ranked the other way round under min.
  assert [r.group for r in compare.summarize(groups, "eval/accuracy", "min")][0] == "norm=batch"


def test_all_diverged_group_ranks_last(tmp_path):
  make_run(tmp_path, "a", config("none", 0), [2.0, 5.0], "diverged")
  make_run(tmp_path, "b", config("layer", 0), [2.0, 3.0], "completed")
  make_run(tmp_path, "c", config("batch", 0), [2.0, 1.0], "completed")
  groups = compare.group_runs(compare.load_runs(str(tmp_path)), ["model.norm"], None)
  rows = compare.summarize(groups, "eval/loss", "min")
  assert [r.group for r in rows] == ["norm=batch", "norm=layer", "norm=none"]
  table = compare.markdown_table(rows)
  assert table.splitlines()[-1].startswith("| norm=none | 1 | 0 | – | – | – | 1/1 |")


def test_markdown_table(sweep_dir):
  groups = compare.group_runs(compare.load_runs(str(sweep_dir)), None, None)
  table = compare.markdown_table(compare.summarize(groups, "eval/loss", "min", 0.65), 0.65)
  lines = table.splitlines()
  assert lines[0] == ("| group | runs | n | final mean [95% CI] | median | best | steps to 0.65 "
                      "| diverged | running | steps/s |")
  # layer: finals 0.25, 0.35: 0.3 ± t(0.975, 1) 0.05 = 0.3 ± 0.6353; reached by 2 of 3 (the
  # diverged run is censored), so half had reached 0.65 by step 100.
  assert lines[2] == ("| norm=layer | 3 | 2 | 0.3 [-0.3353, 0.9353] | 0.3 | 0.3 ± 0.071 "
                      "| median 100 (1 of 3 censored) | 1/3 | 0 | 40.0 |")
  # none: 0.6 ± t(0.975, 2) 0.1 / sqrt(3) = 0.6 ± 0.2484; reached at 100 and 200, 1 never.
  assert lines[3].startswith("| norm=none | 3 | 3 | 0.6 [0.3516, 0.8484] | 0.6 | 0.5667 ± 0.15 "
                             "| median 200 (1 of 3 censored) | 0/3 |")
  assert lines[4].startswith("| norm=batch | 3 | 2 | 1.2 [-2.612, 5.012] | 1.2 | 1.2 ± 0.42 "
                             "| not by half (3 of 3 censored) | 0/3 | 2 |")
  no_threshold = compare.markdown_table(compare.summarize(groups, "eval/loss", "min"))
  assert "steps to" not in no_threshold and "reached" not in no_threshold


def test_report_writes_markdown_and_png(sweep_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("out")
  text = compare.report(str(sweep_dir), "eval/loss", threshold=0.65, out=str(out))
  md = (out / "compare.md").read_text()
  assert md == text and "| norm=layer | 3 |" in md
  footer = md[md.index("\n\nmetric: ") + 2:].splitlines()
  assert footer[0].startswith("metric: eval/loss, mode: min, date: ")
  assert footer[1] == "trained at: unrecorded"  # these runs recorded no code: all stale
  assert footer[2].startswith("**stale**: 8 of 8 runs trained at unrecorded under other code")
  png = (out / "compare.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
  from PIL import Image
  image = np.asarray(Image.open(out / "compare.png").convert("L"))
  assert image.shape[0] > 100 and image.std() > 5  # not a blank canvas
  compare.report(str(sweep_dir))  # --out defaults to the sweep directory
  assert (sweep_dir / "compare.png").exists()
  # --metric defaults to the task's main metric (kalman: eval/mse_over_kalman, lower is better).
  md = (sweep_dir / "compare.md").read_text()
  assert md[md.index("\n\nmetric: ") + 2:].startswith("metric: eval/mse_over_kalman, mode: min, ")


def test_the_footer_names_the_commits_and_the_runs_trained_under_other_code(sweep_dir,
                                                                            monkeypatch):
  monkeypatch.setattr(provenance, "code_fingerprint", lambda: "c0de0f1ngerp")
  started = [p for p in sorted(sweep_dir.iterdir()) if (p / "status.json").exists()
             and ".replaced-" not in p.name and not p.name.startswith("replaced-")]
  for run in started:
    write_status(str(run), code=["c0de0f1ngerp"], commits=["abc1234"])
  footer = compare.report(str(sweep_dir), "eval/loss").split("date: ")[1].splitlines()
  assert footer[1:] == ["trained at: abc1234"]
  write_status(str(started[0]), code=["0123456789ab", "c0de0f1ngerp"],
               commits=["1111111", "abc1234"])  # resumed under changed code
  footer = compare.report(str(sweep_dir), "eval/loss").split("date: ")[1].splitlines()
  assert footer[1] == "trained at: 1111111, abc1234"
  assert footer[2].startswith(f"**stale**: 1 of {len(started)} runs trained at 1111111, abc1234 "
                              "under other code than there is now (fingerprint c0de0f1ngerp)")


def test_report_writes_the_final_values_figure_and_the_axis_importance(sweep_dir, tmp_path):
  text = compare.report(str(sweep_dir), "eval/loss", out=str(tmp_path), importance=True)
  assert (tmp_path / "compare_final.png").read_bytes().startswith(b"\x89PNG")
  assert "| model.norm | 100.0% |" in text  # the one axis the sweep varies explains it all
  assert "exact on the full grid" in text
  plain = compare.report(str(sweep_dir), "eval/loss", out=str(tmp_path))
  assert "share of variance" not in plain


def test_plot_curves(sweep_dir, tmp_path_factory):
  groups = compare.group_runs(compare.load_runs(str(sweep_dir)), None, None)
  path = tmp_path_factory.mktemp("plot") / "loss.png"
  ax = compare_plot.plot(groups, "eval/loss", "min", str(path)).axes[0]
  assert path.read_bytes().startswith(b"\x89PNG")
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels == ["norm=batch", "norm=layer", "norm=none", "diverged/failed (last point)",
                    "off the axis (name: extreme value)"]
  # The range spans the runs that did not diverge (0.25 .. 2): linear, not log for the 50.
  assert ax.get_yscale() == "linear"
  lo, hi = ax.get_ylim()
  assert 0.15 < lo < 0.25 and 2.0 < hi < 2.2
  assert "eval/loss" in ax.get_title()
  # none's mean curve: the mean of its three seeds at each step.
  none = next(line for line in ax.get_lines() if line.get_label() == "norm=none")
  assert list(none.get_xdata()) == list(STEPS)
  assert none.get_ydata() == pytest.approx([2.0, 2.3 / 3, 1.85 / 3, 0.6], rel=1e-6)
  # The diverged run: a thin line, an 'x' at its last finite point (step 200, 50.0) drawn at
  # the top edge, and a '^' there labelled with its name and value.
  marks = [line for line in ax.get_lines() if line.get_marker() == "x" and len(line.get_xdata())]
  assert [(m.get_xdata()[0], m.get_ydata()[0]) for m in marks] == [(200, hi)]
  ups = [line for line in ax.get_lines() if line.get_marker() == "^" and len(line.get_xdata())]
  assert [(u.get_xdata()[0], u.get_ydata()[0]) for u in ups] == [(200, hi)]
  assert [t.get_text() for t in ax.texts] == ["norm=layer,seed=2: 50"]
  # batch's runs share steps 0 and 100 only (one is still running).
  batch = next(line for line in ax.get_lines() if line.get_label() == "norm=batch")
  assert list(batch.get_xdata()) == [0, 100] and batch.get_ydata()[1] == pytest.approx(1.35)
  accuracy = compare_plot.plot(groups, "eval/accuracy", "max", str(path)).axes[0]
  assert accuracy.get_yscale() == "linear"  # accuracies go negative here
  # A fixed y range: the limits are kept.
  fixed = compare_plot.plot(groups, "eval/loss", "min", str(path), ylim=(0.5, 2.0)).axes[0]
  assert fixed.get_ylim() == pytest.approx((0.5, 2.0)) and fixed.get_yscale() == "linear"


def test_an_exploded_member_stays_off_the_axis_range(tmp_path):
  """One member that exploded (completed, finite) and one that diverged neither set the range
  nor make it logarithmic; both are drawn at the edge and named there."""
  curves = {"a": [1.0, 0.8, 0.6, 0.5], "b": [1.0, 0.7, 0.6, 0.55], "c": [1.0, 0.9, 0.7, 0.6],
            "boom": [1.0, 5.0, 80.0, 60.0]}
  for name, losses in curves.items():
    make_run(tmp_path, name, config("none", len(name)), losses, "completed")
  make_run(tmp_path, "nan", config("none", 9), [1.0, 3e3], "diverged")
  runs = compare.load_runs(str(tmp_path))
  assert compare_plot.outliers(runs, "eval/loss", "min") == {"boom"}
  ax = compare_plot.plot({"all": runs}, "eval/loss", "min", str(tmp_path / "c.png")).axes[0]
  assert ax.get_yscale() == "linear"  # 0.5 .. 1 (80 / 0.5 would have made it log)
  lo, hi = ax.get_ylim()
  assert 0.4 < lo < 0.5 and 1.0 < hi < 1.1
  assert sorted(t.get_text() for t in ax.texts) == ["boom: 80", "nan: 3e+03"]
  mean = next(line for line in ax.get_lines() if line.get_label() == "all")
  assert mean.get_ydata()[-1] == pytest.approx(np.mean([0.5, 0.55, 0.6]))  # boom left out
  # An accuracy-like metric: 'boom' falls far below (1 - 80), the bad side under "max".
  assert compare_plot.outliers(runs, "eval/accuracy", "max") == {"boom"}
  # Healthy runs of different speed are not outliers.
  assert compare_plot.outliers([r for r in runs if r.name != "boom"], "eval/loss", "min") == set()


def test_one_run_directory_is_compared_alone(tmp_path):
  run = make_run(tmp_path, "solo", config("none", 0), [2.0, 1.0, 0.5], "completed")
  text = compare.report(str(run))
  assert text.splitlines()[2].startswith("| base | 1 | 1 | 1 | 1 | 1 |")  # 2 * 0.5, n = 1
  assert "baseline" not in text.lower()  # one group: nothing to compare it with
  assert (run / "compare.md").exists() and (run / "compare.png").exists()
  assert [r.name for r in compare.load_runs(str(run))] == ["solo"]


def test_default_metric_is_the_tasks_main_metric(tmp_path):
  """The trainer records the task's main metric in status.json; compare defaults to it."""
  for i, task in enumerate(["copy", "copy"]):
    cfg = {**config("none", i), "task": {"name": task}}
    make_run(tmp_path / "copy", f"seed={i}", cfg, [2.0, 0.5], "completed",
             main_metric=("eval/accuracy", "max"))
  assert compare.default_metric(compare.load_runs(str(tmp_path / "copy"))) == (
      "eval/accuracy", "max")
  text = compare.report(str(tmp_path / "copy"))
  assert "metric: eval/accuracy, mode: max" in text  # higher is better: the task says so
  make_run(tmp_path / "copy", "other", {**config("none", 5), "task": {"name": "adding"}},
           [2.0, 0.5], "completed", main_metric=("eval/mse_over_chance", "min"))
  assert compare.default_metric(compare.load_runs(str(tmp_path / "copy"))) == ("eval/loss", "min")
  assert compare.resolve_mode("eval/bpc", "auto", ("eval/bpc", "min")) == "min"
  assert compare.resolve_mode("eval/accuracy", "auto", ("eval/bpc", "min")) == "max"


def run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "rnn_research.compare", *args], cwd=ROOT,
                        env=dict(os.environ), capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # runs the compare CLI as a process
def test_cli_prints_table(sweep_dir):
  proc = run_cli(str(sweep_dir), "--metric=eval/accuracy", "--group_by=model.norm")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[2].startswith("| norm=layer | 3 | 2 | 0.7 [0.06469, 1.335] |")
  assert "No baseline: give --baseline=<group>" in proc.stdout
  assert "mode: max" in proc.stdout and (sweep_dir / "compare.png").exists()


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "bad input: no directory"),
    (["{empty}"], "bad input: no run directories"),
    (["{sweep}", "--metric=eval/nope"], "eval/accuracy, eval/loss, eval/mse_over_kalman, perf/"),
    (["{sweep}", "--group_by=model.nrom"], "valid model.* keys: model.cell,"),
    (["{sweep}", "--mode=median"], "bad input: "),
    ([], "bad input: give one sweep or run directory"),
    (["{sweep}", "--ylim=2,1"], "bad input: --ylim must be lo,hi with lo < hi, got '2,1'"),
    (["{sweep}", "--ylim=0,x"], "bad input: --ylim must be lo,hi"),
    (["{sweep}", "--baseline=norm=nope"],
     "bad input: unknown baseline 'norm=nope'; groups: norm=batch, norm=layer, norm=none"),
    (["{sweep}", "--metric=eval/accuracy", "--log"],  # batch's running run: 1 - 1.5
     "bad input: --log needs positive values of the metric, got -0.5"),
])
@pytest.mark.slow  # one compare CLI process per case
def test_cli_bad_input_exits_2(sweep_dir, tmp_path_factory, args, message):
  empty = tmp_path_factory.mktemp("empty")
  (empty / "not_a_run").mkdir()
  paths = {"missing": str(empty / "absent"), "empty": str(empty), "sweep": str(sweep_dir)}
  proc = run_cli(*(a.format(**paths) for a in args))
  assert proc.returncode == 2
  assert message in proc.stderr
  assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("bad input:")
  assert not (sweep_dir / "compare.md").exists()


def test_import_leaves_jax_out():
  code = ("import sys, rnn_research.experiments.compare; "
          "bad = [m for m in ('jax', 'flax', 'optax', 'orbax', 'rnn_research.training.train') "
          "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stdout + proc.stderr


# Final eval/loss per seed: layer clearly lower than none, batch no different; batch has a
# diverged sixth run.
FINALS = {"none": [1.0, 1.1, 0.9, 1.05, 0.95], "layer": [0.5, 0.55, 0.45, 0.52, 0.48],
          "batch": [1.0, 1.2, 0.8, 1.1, 0.9]}


def stats_sweep(root: Path, **manifest) -> Path:
  """FINALS as a sweep directory; `manifest` adds keys (baseline, metric) to sweep.json."""
  members = []
  for norm, finals in FINALS.items():
    for seed, final in enumerate(finals + ([50.0] if norm == "batch" else [])):
      name = f"norm={norm},seed={seed}"
      members.append({"name": name, "overrides": {"model.norm": norm, "train.seed": seed}})
      make_run(root, name, config(norm, seed), [2.0, final], "diverged" if final > 2 else
               "completed")
  (root / "sweep.json").write_text(json.dumps({"members": members, **manifest}))
  return root


def comparison_rows(text: str) -> dict[str, dict[str, str]]:
  """The second markdown table of `text` as {group: {column: cell}}."""
  table = [line for line in text.split("\n\n")[1].splitlines() if line.startswith("|")]
  head = [c.strip() for c in table[0].strip("|").split("|")]
  return {cells[0]: dict(zip(head, cells)) for cells in
          ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}


def test_table_with_the_baseline_of_sweep_json(tmp_path):
  from scipy import stats as sps
  from rnn_research.experiments import stats

  text = compare.report(str(stats_sweep(tmp_path, baseline={"model.norm": "none"})),
                        "eval/loss")
  rows = comparison_rows(text)
  assert list(rows) == ["norm=layer", "norm=batch"]  # ranked as the groups are; not the base
  p = [sps.ttest_ind(FINALS[g], FINALS["none"], equal_var=False).pvalue for g in ("layer", "batch")]
  layer, batch = rows["norm=layer"], rows["norm=batch"]
  d, lo, hi, _ = stats.welch(FINALS["layer"], FINALS["none"])
  assert layer["n"] == "5" and layer["Δ vs norm=none [95% CI]"] == f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]"
  assert layer["p"] == f"{p[0]:.2g}" and layer["p (Holm)"] == f"{stats.holm(p)[0]:.2g}"
  assert layer["Hedges' g"] == f"{stats.hedges_g(FINALS['layer'], FINALS['none']):+.2f}"
  assert layer["verdict"] == "better" and batch["verdict"] == "no evidence"
  # batch: 1 of 6 diverged against 0 of 5 (Fisher: p = 1).
  assert batch["n"] == "5" and batch["diverged: p (Holm)"] == "1 (1)"
  legend = text.split("\n\n")[2]
  assert legend.startswith("Baseline norm=none (n=5). Effect: difference of means (Welch)")
  assert "Holm-adjusted over the 2 comparisons" in legend and "lower is better" in legend
  # --baseline overrides sweep.json's; under max (accuracy = 1 - loss) layer is still better.
  rows = comparison_rows(compare.report(str(tmp_path), "eval/loss", baseline="norm=layer"))
  assert list(rows) == ["norm=none", "norm=batch"]
  assert rows["norm=none"]["verdict"] == rows["norm=batch"]["verdict"] == "worse"
  rows = comparison_rows(compare.report(str(tmp_path), "eval/accuracy"))
  assert rows["norm=layer"]["verdict"] == "better"
  with pytest.raises(ValueError, match="unknown baseline 'x'; groups: norm=batch, norm=layer"):
    compare.report(str(tmp_path), "eval/loss", baseline="x")
  # --log: ratios of geometric means.
  rows = comparison_rows(compare.report(str(tmp_path), "eval/loss", log=True))
  ratio = sps.gmean(FINALS["layer"]) / sps.gmean(FINALS["none"])
  assert rows["norm=layer"]["ratio to norm=none [95% CI]"].startswith(f"{ratio:.4g}× [")


def test_no_or_unmatched_baseline_shows_the_groups_only(tmp_path):
  text = compare.report(str(stats_sweep(tmp_path / "a")), "eval/loss")
  assert text.split("\n\n")[1] == compare.stats_table.NO_BASELINE and "p (Holm)" not in text
  # A sweep.json baseline that no group has (e.g. under another --group_by): a note, no error.
  text = compare.report(str(stats_sweep(tmp_path / "b", baseline={"model.norm": "gone"})),
                        "eval/loss")
  assert text.split("\n\n")[1].startswith(
      'sweep.json\'s baseline {"model.norm": "gone"} matches 0 groups; give --baseline=<group>')
  # --group_by: a baseline dict matches the group whose runs have its config values.
  text = compare.report(str(stats_sweep(tmp_path / "c", baseline={"model.norm": "none"})),
                        "eval/loss", ["model.norm", "model.cell"])
  assert "Baseline norm=none,cell=gru (n=5)" in text


SWEEP_FILE = '''"""A sweep for compare's tests."""
import ml_collections


def get_config(arg=None):
  return ml_collections.ConfigDict({"model": {"norm": "none"}, "train": {"seed": 0}})


def get_sweep():
  return [{"model.norm": n, "train.seed": s} for n in ("none", "layer", "batch") for s in range(5)]


def get_baseline():
  return {"model.norm": "none"}


def get_metric(arg):
  return ("eval/accuracy", "max") if arg == "acc" else ("eval/loss", "min")
'''


def test_sweep_files_baseline_and_metric_reach_compare_through_sweep_json(tmp_path):
  from rnn_research.experiments import sweep_runner, sweep_spec

  path = tmp_path / "s.py"
  path.write_text(SWEEP_FILE)
  swp = sweep_spec.load(f"{path}:acc")
  assert swp.baseline == {"model.norm": "none"} and swp.metric == ("eval/accuracy", "max")
  assert sweep_spec.load(str(path)).metric == ("eval/loss", "min")
  workdir = stats_sweep(tmp_path / "runs")
  sweep_runner._write_manifest(swp, str(workdir), list(range(len(swp.members))))
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert manifest["baseline"] == {"model.norm": "none"}
  assert manifest["metric"] == ["eval/accuracy", "max"]
  text = compare.report(str(workdir))  # no --metric, no --baseline: the sweep file's
  assert text[text.index("\n\nmetric: ") + 2:].startswith("metric: eval/accuracy, mode: max, ")
  assert comparison_rows(text)["norm=layer"]["verdict"] == "better"
  assert "Baseline norm=none (n=5)" in text and "higher is better" in text
  path.write_text(SWEEP_FILE.replace('("eval/loss", "min")', '("eval/loss", "least")'))
  with pytest.raises(sweep_spec.SweepError, match="get_metric.. returned .* valid: .tag, 'min'"):
    sweep_spec.load(str(path))


def run_config(swp, i: int) -> dict:
  """Member i's whole config, flat ({dotted key: value})."""
  from rnn_research.training import workdir as run_dir
  return run_dir.flat(swp.config(i).to_dict())


@pytest.mark.parametrize("name", ["activations", "clipping", "extensions", "lstm_variants",
                                  "norm_placement", "skips", "horizontal_skips", "transition",
                                  "generation"])
def test_shipped_sweeps_baseline_is_one_group(name):
  """Each shipped sweep file's get_baseline() names exactly one group of its members (grouped
  as its get_group_by() says, if it has one) of more than one run, and get_metric() the metric
  its docstring compares."""
  from rnn_research.experiments import sweep_spec

  swp = sweep_spec.load(str(ROOT / "configs" / "ablations" / f"{name}.py"))
  manifest = {"members": [{"name": n, "overrides": m} for n, m in zip(swp.names, swp.members)]}
  runs = [compare.Run(n, "", swp.config(i).to_dict(), {}, {}) for i, n in enumerate(swp.names)]
  groups = compare.group_runs(runs, swp.group_by, manifest)
  base = baseline.baseline_group(groups, swp.baseline, manifest)
  if swp.group_by:  # every member with the baseline's config values
    expected = sum(all(run_config(swp, i).get(k) == v for k, v in swp.baseline.items())
                   for i in range(len(swp.members)))
  else:  # the members whose overrides but the seed are the baseline
    expected = sum(1 for m in swp.members
                   if {k: v for k, v in m.items() if k != "train.seed"} == swp.baseline)
  assert len(groups[base]) == expected > 1
  assert f"--metric={swp.metric[0]}" in swp.doc and swp.metric[1] == "min"


def test_get_group_by_forms_the_groups(tmp_path):
  """A sweep file's get_group_by() (in sweep.json) groups runs that differ in a nuisance key
  (here a learning rate per run) by the keys it names; --group_by still overrides it."""
  from rnn_research.experiments import sweep_runner, sweep_spec

  path = tmp_path / "lr_search.py"
  path.write_text(textwrap.dedent('''
      from configs import default
      from rnn_research.sweep_spec import log_uniform, random_search

      def get_config(arg=None):
        return default.for_task("kalman", cell="gru", hidden_size=4, steps=4, batch_size=4)

      def get_sweep():
        return [{"model.cell": cell, **lr, "train.seed": s} for cell in ("rnn", "gru")
                for s, lr in enumerate(random_search(3, seed=0, space={
                    "train.learning_rate": log_uniform(1e-3, 1e-2)}))]

      def get_group_by():
        return ["model.cell"]
      '''))
  swp = sweep_spec.load(str(path))
  sweep_runner._write_manifest(swp, str(tmp_path), list(range(len(swp.members))))
  manifest = json.loads((tmp_path / "sweep.json").read_text())
  assert manifest["group_by"] == ["model.cell"]
  runs = [compare.Run(n, "", swp.config(i).to_dict(), {}, {}) for i, n in enumerate(swp.names)]
  groups = compare.group_runs(runs, None, manifest)  # sweep.json's group_by
  assert sorted(len(g) for g in groups.values()) == [3, 3]
  assert len(compare.group_runs(runs, None, {**manifest, "group_by": None})) == 6  # overrides
  assert len(compare.group_runs(runs, ["train.learning_rate"], manifest)) == 3  # the flag wins
  path.write_text(path.read_text().replace('["model.cell"]', '"model.cell"'))
  with pytest.raises(sweep_spec.SweepError, match="get_group_by.. returned 'model.cell'"):
    sweep_spec.load(str(path))


def reach_sweep(root: Path) -> Path:
  """eval/loss per group: none (the baseline) never below 0.5; layer's 3 runs all reach it;
  batch: 3 runs reach it and a 4th diverged before it did."""
  curves = {"none": [[2.0, 1.0, 0.9, 0.8], [2.0, 0.9, 0.8, 0.7], [2.0, 1.1, 0.7, 0.6]],
            "layer": [[2.0, 0.4, 0.3, 0.2], [2.0, 0.6, 0.45, 0.3], [2.0, 0.7, 0.6, 0.5]],
            "batch": [[2.0, 0.5, 0.4, 0.4], [2.0, 0.6, 0.5, 0.45], [2.0, 0.8, 0.6, 0.5],
                      [2.0, 1.5, float("nan")]]}
  members = []
  for norm, runs in curves.items():
    for seed, losses in enumerate(runs):
      name = f"norm={norm},seed={seed}"
      members.append({"name": name, "overrides": {"model.norm": norm, "train.seed": seed}})
      make_run(root, name, config(norm, seed), losses, "completed" if len(losses) == 4 else
               "diverged")
  (root / "sweep.json").write_text(json.dumps(
      {"members": members, "baseline": {"model.norm": "none"}}))
  return root


def test_threshold_adds_fishers_test_of_reaching_it_against_the_baseline(tmp_path):
  from scipy import stats as sps
  from rnn_research.experiments import stats

  text = compare.report(str(reach_sweep(tmp_path)), "eval/loss", threshold=0.5)
  rows = comparison_rows(text)
  assert list(rows) == ["norm=layer", "norm=batch"]
  p_layer = sps.fisher_exact([[3, 0], [0, 3]]).pvalue
  p_batch = sps.fisher_exact([[3, 1], [0, 3]]).pvalue  # the diverged run did not reach 0.5
  assert p_layer == pytest.approx(0.1)
  holm = stats.holm([p_layer, p_batch])
  assert rows["norm=layer"]["reached: p (Holm)"] == f"3/3 vs 0/3: 0.1 ({holm[0]:.2g})"
  assert rows["norm=batch"]["reached: p (Holm)"] == f"3/4 vs 0/3: {p_batch:.2g} ({holm[1]:.2g})"
  assert "reached: runs that reached 0.5 of all runs, against the baseline's" in text
  # The groups' table agrees: batch's 4th run is censored.
  assert "| median 200 (1 of 4 censored) |" in text


def test_without_threshold_no_reached_column(tmp_path):
  text = compare.report(str(reach_sweep(tmp_path)), "eval/loss")
  head = text.split("\n\n")[1].splitlines()[0]
  assert head == ("| group | n | Δ vs norm=none [95% CI] | Hedges' g | p | p (Holm) | verdict "
                  "| diverged: p (Holm) |")
  assert "reached" not in text and "steps to" not in text
