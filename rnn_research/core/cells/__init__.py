"""Recurrent cells, one file each; `CELLS.get(name)` gives the class."""
from rnn_research.core.cells import gru, lru, lstm, min_cells, rnn  # noqa: F401  (registers)
from rnn_research.core.cells.base import CELLS, Cell
from rnn_research.core.cells.lstm_variants import LSTM_VARIANTS, LSTMVariant

__all__ = ["CELLS", "Cell", "LSTM_VARIANTS", "LSTMVariant"]
