"""Shared-cache RAG: the document index, segment plans, KV capture and reuse, the engine."""
