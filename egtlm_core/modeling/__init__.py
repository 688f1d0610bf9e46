"""Model-level pieces that work on any decoder: the attention switch, kernels, RoPE, API shims."""
