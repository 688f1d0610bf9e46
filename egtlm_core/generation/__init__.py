"""Generation: chat on `generate` (stop strings, streaming, usage) and grammar-constrained decoding."""
