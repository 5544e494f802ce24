"""Filtering a noisy damped pendulum against an extended Kalman filter (lecture 5.1).

eval/mse_over_ekf below 1 means the RNN filter beats the EKF.

  python -m rnn_research.main --config=configs/tasks/pendulum.py --workdir=runs/pendulum
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return default.for_task("pendulum", cell="gru", hidden_size=32, steps=3000, batch_size=64)
