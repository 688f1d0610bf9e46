"""Embedding: instruction prompts, pooling, and the embedding pass."""
