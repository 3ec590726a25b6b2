"""The training engine: one loop, batches, evaluation, checkpoints."""
