"""Training: optimiser, train state and the sharded train step."""
