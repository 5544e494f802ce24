"""The model's public entry: `build(config.model, in_features=, out_features=, rngs=)`.

The stacked model lives in `rnn_research/core/models.py`; this module keeps the import path
`rnn_research.models` that users and configs name.
"""
from rnn_research.core.models import RecurrentStack, build

__all__ = ["RecurrentStack", "build"]
