"""The training-op schema: training_ops.fbs, its generator and the generated code."""
