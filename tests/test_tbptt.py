"""Truncated BPTT with carried state: K = T is full BPTT, no gradient reaches an earlier window,
fresh streams restart the carry, the streams tile into windows, config refusals, windowed eval
equals one call, and a resumed run (in-process, and after SIGKILL) equals an uninterrupted one."""
from __future__ import annotations

import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rnn_research.tasks import TASKS, batching
from rnn_research.training import tbptt, train
from rnn_research.training.checkpointing import Checkpointer
from rnn_research.training.config_defaults import base
from rnn_research.training.metric_writer import read_scalars
from rnn_research.training.status import read_status

B, WINDOW, STREAM = 4, 8, 32


def tiny(window: int = WINDOW, stream: int = STREAM, steps: int = 6, **model):
  """A tiny charlm run with truncated BPTT (4 windows per stream by default)."""
  config = base("charlm")
  config.model.update(hidden_size=8, **model)
  config.task.update(length=16, eval_windows=4, eval_length=24, stream_length=stream)
  config.train.update(batch_size=B, steps=steps, tbptt_window=window, schedule="constant")
  return config


def allclose(a, b, rtol=1e-6, atol=1e-7) -> None:
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def filled(carry, value: float):
  return jax.tree.map(lambda c: jnp.full_like(c, value), carry)


def test_window_equal_to_the_stream_is_full_bptt():
  config = tiny(16, 16, learned_initial_state=True)
  task, graphdef, state, optimizer = train.init_state(config)
  batch = task.stream_window(5, 16)
  assert batch["fresh"].all()  # one window per stream: every window starts one
  step = jax.jit(train.train_step_fn(graphdef, task, optimizer))
  seed, lr = np.uint32(0), np.float32(config.train.learning_rate)
  with_carry, m = step({**state, "carry": filled(state["carry"], 3.0)}, batch, seed, lr)
  plain = {k: v for k, v in state.items() if k != "carry"}
  full, m_full = step(plain, {k: v for k, v in batch.items() if k != "fresh"}, seed, lr)
  allclose(m, m_full)
  allclose(with_carry["params"], full["params"])
  allclose(with_carry["opt_state"], full["opt_state"])


def two_windows():
  """(task, graphdef, state, window 0, window 1) of one set of streams."""
  task, graphdef, state, _ = train.init_state(tiny())
  w0, w1 = (jax.tree.map(jnp.asarray, task.stream_window(s, WINDOW)) for s in (0, 1))
  assert w0["fresh"].all() and not w1["fresh"].any()
  return task, graphdef, state, w0, w1


def test_no_gradient_reaches_an_earlier_window():
  task, graphdef, state, w0, w1 = two_windows()
  model = lambda p: nnx.merge(graphdef, p, state["rest"])  # noqa: E731

  def second_loss(params, x0, hand_on=tbptt.forward):
    _, carry = tbptt.forward(model(params), {**w0, "x": x0}, state["carry"], None)
    ys, _ = hand_on(model(params), w1, carry, None)
    return task.loss(ys, w1)

  params = state["params"]
  g_params, g_x0 = jax.grad(second_loss, argnums=(0, 1))(params, w0["x"])
  assert not np.any(np.asarray(g_x0))  # exactly zero
  # Yet the carry hands window 0 on: its inputs change window 1's loss ...
  assert float(second_loss(params, w0["x"][::-1])) != float(second_loss(params, w0["x"]))
  # ... and without the stop the gradient would reach them.
  direct = lambda m, b, c, k: m(b["x"], b["mask"], state=c, return_state=True)  # noqa: E731
  assert np.any(np.asarray(jax.grad(second_loss, argnums=1)(params, w0["x"], direct)))
  # The parameters get window 1's gradient with the carry as data, nothing through it.
  _, carry = tbptt.forward(model(params), w0, state["carry"], None)
  given = jax.grad(lambda p: task.loss(tbptt.forward(model(p), w1, carry, None)[0], w1))
  allclose(g_params, given(params))


def test_fresh_rows_restart_from_the_initial_state():
  _, graphdef, state, _, w1 = two_windows()
  model = nnx.merge(graphdef, state["params"], state["rest"])
  fresh = np.array([True, False, True, False])
  batch = {**w1, "fresh": jnp.asarray(fresh)}
  ys = [np.asarray(tbptt.forward(model, batch, filled(state["carry"], v), None)[0])
        for v in (0.5, -0.5)]
  from_h0 = np.asarray(model(w1["x"], w1["mask"]))
  for y in ys:
    np.testing.assert_allclose(y[fresh], from_h0[fresh], rtol=1e-6, atol=1e-7)
  assert np.abs(ys[0][~fresh] - ys[1][~fresh]).max() > 1e-3  # the others continue their carry


@pytest.mark.parametrize("name", ["charlm", "multiscale"])
def test_windows_tile_the_streams_then_a_new_draw_starts(name):
  cfg = {"name": name, "stream_length": STREAM}
  task = TASKS.get(name)(cfg, B, 3)
  windows = [task.stream_window(step, WINDOW) for step in range(8)]
  assert [w["fresh"].tolist() for w in windows] == [[i % 4 == 0] * B for i in range(8)]
  stream = task.sample_stream(batching.stream_rng(3, 0), B)
  for key, value in stream.items():
    np.testing.assert_array_equal(np.concatenate([w[key] for w in windows[:4]], 1), value)
  assert not np.array_equal(windows[4]["x"], windows[0]["x"])  # the next draw
  again = TASKS.get(name)(cfg, B, 3).stream_window(6, WINDOW)  # a pure function of the step
  for key, value in again.items():
    np.testing.assert_array_equal(value, windows[6][key])


def test_charlm_streams_are_consecutive_training_text():
  task = TASKS.get("charlm")({"name": "charlm", "stream_length": 512}, B, 0)
  rows = np.concatenate([task.stream_window(s, 128)["x"] for s in range(4)], 1).argmax(-1)
  ys = np.concatenate([task.stream_window(s, 128)["y"] for s in range(4)], 1)
  np.testing.assert_array_equal(ys[:, :-1], rows[:, 1:])  # across window boundaries too
  text = task._train_ids
  for row in rows:
    starts = np.flatnonzero(text[:len(text) - len(row)] == row[0])
    for t in range(1, len(row)):
      starts = starts[text[starts + t] == row[t]]
    assert len(starts), "a stream row is not a run of the training text"


def test_multiscale_stream_is_one_chain_switching_at_its_rate():
  cfg = {"name": "multiscale", "stream_length": 4000, "mean_duration": 20.0}
  task = TASKS.get("multiscale")(cfg, 8, 0)
  regime = np.concatenate([task.stream_window(s, 500)["y"] for s in range(8)], 1)
  switches = (regime[:, 1:] != regime[:, :-1]).mean()
  assert switches == pytest.approx(1 / 20, rel=0.1)  # ~1600 switches: 4 sigma
  assert np.bincount(regime.ravel(), minlength=3) / regime.size == pytest.approx(1 / 3, abs=0.06)


def _changed(task="charlm", **changes):
  config = tiny() if task == "charlm" else base(task)
  for key, value in changes.items():
    section, name = key.split("__")
    config[section][name] = value
  return config


@pytest.mark.parametrize("config, match", [
    (_changed(train__tbptt_window=-1), "tbptt_window must be an integer >= 0"),
    (_changed(train__tbptt_window=True), "tbptt_window must be an integer >= 0"),
    (_changed(train__tbptt_window=0), "stream_length=32 is the long-stream form"),
    (_changed(train__tbptt_window=5), "positive multiple of config.train.tbptt_window=5"),
    (_changed(task__stream_length=0), "stream_length=0 must be a positive multiple"),
    (_changed("kalman", train__tbptt_window=8), "charlm, multiscale; task 'kalman' has none"),
    (_changed(task__pack=2), "task.pack=2"),
    (_changed(model__bidirectional="concat"), "bidirectional='concat' carries no state"),
    (_changed(model__norm="layer"), "norm='layer' normalises with statistics"),
    (_changed(model__norm="batch"), "norm='batch' normalises with statistics"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_combinations_are_refused_before_writing(config, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_window_must_divide_the_stream():
  task = TASKS.get("multiscale")({"name": "multiscale", "stream_length": 30}, B, 0)
  with pytest.raises(ValueError, match="stream_length=30 must be a positive multiple"):
    task.stream_window(0, 8)


def test_windowed_eval_equals_one_call():
  _, graphdef, state, _ = train.init_state(tiny(norm="mini_layer", num_layers=2))
  task = TASKS.get("charlm")({"name": "charlm", "eval_windows": 4, "eval_length": 24}, B, 0)
  batch = task.eval_batches()[0]
  args = (state["params"], state["rest"], batch["x"], batch["mask"], None)
  whole = np.asarray(train.make_predict(graphdef, state)(*args))
  for window in (5, 24, 64):  # padded, exact, longer than the rows
    got = train.make_predict(graphdef, state, window)(*args)
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)


def final_state(workdir, config):
  _, _, target, _ = train.init_state(config)
  with Checkpointer(str(workdir / "checkpoints")) as ckpt:
    return ckpt.restore(target)[1]


@pytest.mark.slow  # three tiny training runs
def test_resumed_mid_stream_equals_uninterrupted(tmp_path):
  straight = train.train_and_evaluate(tiny(steps=6), str(tmp_path / "straight"))
  resumed_dir = tmp_path / "resumed"
  train.train_and_evaluate(tiny(steps=3), str(resumed_dir))  # stops before window 3 of 4
  assert read_status(str(resumed_dir))["step"] == 3
  mid_stream = final_state(resumed_dir, tiny())["carry"]  # what window 3 starts from
  assert all(np.abs(np.asarray(c.h)).max() > 1e-3 for c in mid_stream)
  assert train.train_and_evaluate(tiny(steps=6), str(resumed_dir)) == straight
  a, b = final_state(resumed_dir, tiny()), final_state(tmp_path / "straight", tiny())
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # four tiny training runs
def test_seed_group_carries_each_runs_state_as_alone(tmp_path):
  def seeded(seed):
    config = tiny(steps=5)
    config.train.seed = seed
    return config

  alone = [train.train_and_evaluate(seeded(s), str(tmp_path / f"alone{s}")) for s in (0, 1)]
  dirs = [str(tmp_path / f"group{s}") for s in (0, 1)]
  together = train.train_seeds([seeded(0), seeded(1)], dirs)
  for got, want in zip(together, alone):
    assert got.keys() == want.keys()
    for key in want:
      assert got[key] == pytest.approx(want[key], rel=1e-5), key
  assert together[0]["loss"] != together[1]["loss"]


@pytest.mark.slow  # runs the entry point as processes
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
  from tests.test_main import checked, cli, popen, signal_after_checkpoint, steps_on_disk
  steps = 60
  overrides = {"train.steps": steps, "train.batch_size": B, "model.hidden_size": 4,
               "task.eval_windows": 4, "task.eval_length": 24, "task.stream_length": 48,
               "train.tbptt_window": 8, "train.checkpoint_every": 5, "train.log_every": 1,
               "train.eval_every": 20, "train.diagnostics_every": steps}
  a, b, log = tmp_path / "a", tmp_path / "b", tmp_path / "b.log"
  checked(cli("charlm_tbptt", a, overrides))
  proc = popen("charlm_tbptt", b, overrides, log)
  signal_after_checkpoint(proc, b, log, signal.SIGKILL, timeout=30)
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  saved = steps_on_disk(b)
  assert saved and max(saved) < steps, saved
  rerun = checked(cli("charlm_tbptt", b, overrides))
  assert f"resumed from step {max(saved)}" in rerun.stderr
  assert read_status(str(b))["metrics"] == read_status(str(a))["metrics"]
  ra, rb = read_scalars(str(a)), read_scalars(str(b))
  assert rb["train/loss"] == ra["train/loss"] and rb["eval/loss"] == ra["eval/loss"]
