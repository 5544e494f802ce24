"""rnn_research: every design choice of the RNN/LSTM lecture as a trainable config axis."""
