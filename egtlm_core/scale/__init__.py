"""Beyond one process: indexing on Ray Data, serving replicas on Ray Serve, states and documents in Redis.

Ray is optional (`pip install 'egtlm[ray]'`) and imported only when a function here runs.
"""

from __future__ import annotations

from .ray_index import DocumentIndexer, IndexedBatch, RayIndexOptions, index_on_ray
from .ray_serve import serve_on_ray
from .redis_backing import redis_backing

__all__ = [
    "DocumentIndexer",
    "IndexedBatch",
    "RayIndexOptions",
    "index_on_ray",
    "redis_backing",
    "serve_on_ray",
]
