"""Beyond one process: indexing on Ray Data (states in a shared tier, vectors back to the caller).

Ray is optional (`pip install 'egtlm[ray]'`) and imported only when a function here runs.
"""

from __future__ import annotations

from .ray_index import DocumentIndexer, IndexedBatch, RayIndexOptions, index_on_ray

__all__ = ["DocumentIndexer", "IndexedBatch", "RayIndexOptions", "index_on_ray"]
