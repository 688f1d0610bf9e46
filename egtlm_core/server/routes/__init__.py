"""The server's routes, one module per group: OpenAI's (embeddings, chat, models) and egtlm's own
(documents, retrieval, answers), plus health and metrics."""
