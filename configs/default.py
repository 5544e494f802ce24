"""Default: a 32-unit GRU learns to filter a linear-Gaussian system (lecture 1.1, 5.1).

  python -m rnn_research.main --config=configs/default.py --workdir=runs/default

`eval/mse_over_kalman` is the RNN filter's MSE over the exact Kalman filter's (1.0 is optimal).
Other problems: configs/tasks/<task>.py; every model key: rnn_research/core/spec.py.
"""
import ml_collections

from rnn_research.core.spec import model_defaults
from rnn_research.tasks import TASKS


def base(task: str) -> ml_collections.ConfigDict:
  """An unlocked config for `task`: every section at its defaults."""
  config = ml_collections.ConfigDict()
  # The problem, by name, and its own keys (rnn_research/tasks/<name>.py).
  config.task = TASKS.get(task).defaults()
  # The recurrent core: every key, its default and its rule in rnn_research/core/spec.py.
  config.model = model_defaults()
  config.train = train = ml_collections.ConfigDict()
  # Optimizer steps.
  train.steps = 600
  # Sequences per step.
  train.batch_size = 64
  # adam, adamw or sgd.
  train.optimizer = "adam"
  # Peak learning rate.
  train.learning_rate = 1e-2
  # constant, cosine (decay to 0 at `steps`) or warmup_cosine.
  train.schedule = "cosine"
  # Linear warm-up steps of warmup_cosine.
  train.warmup_steps = 0
  # adamw's decoupled weight decay.
  train.weight_decay = 1e-4
  # sgd's momentum (0 for plain sgd).
  train.momentum = 0.9
  # Gradient clipping (lecture 2.1.2): none, global_norm or value.
  train.clip = "global_norm"
  # Threshold of the clipping.
  train.clip_value = 1.0
  # Seed of the model's initialisation and of the training data.
  train.seed = 0
  # Split each batch over all devices (jax.sharding mesh over the batch axis).
  train.data_parallel = False
  # Evaluate every this many steps (and at the end).
  train.eval_every = 200
  # Save a checkpoint every this many steps (and at the end).
  train.checkpoint_every = 200
  # Checkpoints kept.
  train.max_to_keep = 3
  # Write train scalars every this many steps.
  train.log_every = 50
  # Measure ||dL/dh_t|| per layer and step every this many steps (lecture section 2).
  train.diagnostics_every = 200
  return config


def for_task(task: str, *, cell: str, hidden_size: int, steps: int,
             batch_size: int) -> ml_collections.ConfigDict:
  """A locked config for `task` with the given model and run length (configs/tasks/*.py)."""
  config = base(task)
  config.model.cell = cell
  config.model.hidden_size = hidden_size
  config.train.steps = steps
  config.train.batch_size = batch_size
  config.train.eval_every = config.train.checkpoint_every = max(steps // 6, 1)
  config.train.diagnostics_every = config.train.eval_every
  config.lock()
  return config


def ablation_base(file: str, arg: str | None, task: str, cell: str,
                  steps: int) -> ml_collections.ConfigDict:
  """The base of a sweep in configs/ablations/: `arg` None or "small" gives 32 units and
  `steps` (the ~10-minute CPU size); "full" gives 128 units and 4x the steps (for a GPU)."""
  if arg not in (None, "small", "full"):
    raise ValueError(f"{file}: unknown arg {arg!r}; valid: small, full")
  full = arg == "full"
  return for_task(task, cell=cell, hidden_size=128 if full else 32,
                  steps=steps * (4 if full else 1), batch_size=64)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The README's main job (its result and timing: docs/guide.md)."""
  del arg
  return for_task("kalman", cell="gru", hidden_size=32, steps=1500, batch_size=64)
