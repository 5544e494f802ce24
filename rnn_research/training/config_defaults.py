"""The defaults every config starts from: `base(task)` (every section at its defaults) and
`for_task(...)` (a locked config of one task, model size and run length).

The files in configs/ build on these, and so can a config file of your own anywhere:

  from rnn_research.training.config_defaults import for_task

  def get_config(arg=None):
    config = for_task("charlm", cell="lstm", hidden_size=64, steps=2000, batch_size=32)
    config.model.norm = "layer"
    return config
"""
import ml_collections
from ml_collections import config_dict

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
  # Truncated BPTT (0: off): train windows of this many steps of long streams (the task's
  # task.stream_length, a multiple of it), the carry crossing windows under stop_gradient.
  train.tbptt_window = 0
  # Split each batch over all devices (jax.sharding mesh over the batch axis).
  train.data_parallel = False
  # Evaluate every this many steps (and at the end); unset: ceil(steps / 6).
  train.eval_every = config_dict.placeholder(int)
  # Save a checkpoint every this many steps (and at the end); unset: ceil(steps / 6).
  train.checkpoint_every = config_dict.placeholder(int)
  # Checkpoints kept.
  train.max_to_keep = 3
  # Log train scalars and a progress line every this many steps; unset: ceil(steps / 20).
  train.log_every = config_dict.placeholder(int)
  # Measure ||dL/dh_t|| per layer and step every this many steps (lecture section 2); unset:
  # ceil(steps / 6).
  train.diagnostics_every = config_dict.placeholder(int)
  # A train loss (any step) or eval loss above this ends the run as diverged, as a NaN does
  # (inf: off). Measured peaks (docs/guide.md): 4.2 for the shipped task configs; up to 2e16
  # for a relu rnn without clipping that recovers, 3e18 and more for one that has exploded.
  train.max_loss = 1e10
  # Precision of float32 matmuls in every jitted function of the run (jax's
  # default_matmul_precision): default (on NVIDIA GPUs TF32, ~1e-3 relative), high or highest
  # (true float32: parity with a CPU run). On CPU all three are float32.
  train.matmul_precision = "default"
  return config


def for_task(task: str, *, cell: str, hidden_size: int, steps: int,
             batch_size: int) -> ml_collections.ConfigDict:
  """A locked config for `task` with the given model and run length (configs/tasks/*.py)."""
  config = base(task)
  config.model.cell = cell
  config.model.hidden_size = hidden_size
  config.train.steps = steps
  config.train.batch_size = batch_size
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
