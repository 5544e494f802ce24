"""prefetch.ahead: the same batches in the same order, made at most a bounded run ahead."""
import numpy as np
import pytest

from rnn_research.tasks import TASKS
from rnn_research.training import prefetch, tbptt


def _tracking(nbytes: int):
  made: list[int] = []

  def make(step: int) -> dict[str, np.ndarray]:
    made.append(step)
    return {"x": np.full(nbytes, step % 251, np.uint8)}
  return made, make


@pytest.mark.parametrize("start,stop", [(0, 1), (0, 70), (5, 38), (69, 70), (3, 3)])
def test_yields_every_step_once_in_order(start, stop):
  made, make = _tracking(8)
  got = [int(b["x"][0]) for b in prefetch.ahead(make, start, stop)]
  assert got == [s % 251 for s in range(start, stop)]
  assert made == list(range(start, stop))


def test_makes_at_most_max_ahead_before_it_is_read():
  made, make = _tracking(8)
  for k, _ in enumerate(prefetch.ahead(make, 10, 200)):
    assert len(made) <= k + prefetch.MAX_AHEAD  # never more than one run of batches waiting
  assert len(made) == 190


def test_large_batches_are_made_one_at_a_time(monkeypatch):
  monkeypatch.setattr(prefetch, "MAX_BYTES", 1000)
  made, make = _tracking(600)  # two would exceed MAX_BYTES
  for k, _ in enumerate(prefetch.ahead(make, 0, 20)):
    assert len(made) == k + 1


def test_a_task_stream_through_ahead_equals_the_batches_made_step_by_step():
  """Truncated BPTT's windows share a cached stream; made ahead, across a new draw of
  streams, they hold what one window at a time holds."""
  cfg = {"name": "multiscale", "stream_length": 32}
  task, window = TASKS.get("multiscale")(cfg, 4, 0), 8  # a new draw of streams every 4 steps
  early = list(prefetch.ahead(lambda s: tbptt.train_batch(task, s, window), 2, 11))
  fresh = TASKS.get("multiscale")(cfg, 4, 0)
  for step, batch in zip(range(2, 11), early):
    expected = tbptt.train_batch(fresh, step, window)
    assert batch.keys() == expected.keys()
    for key in batch:
      np.testing.assert_array_equal(batch[key], expected[key])
