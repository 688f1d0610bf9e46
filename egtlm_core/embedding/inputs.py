"""What `encode` accepts: a string or a list of non-empty strings, checked before any work starts.

Every entry point that embeds (EgtLM.encode, the sentence-transformers module, the server) checks
its texts here, so the same bad input gets the same message everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_texts(texts: Any) -> tuple[list[str], bool]:
    """-> (texts as a list, whether a single string was given). Errors name the bad item."""
    if isinstance(texts, str):
        texts = [texts]
        single = True
    elif texts is None or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}.")
    else:
        single = False
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(t).__name__}: {t!r:.60}.")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(
            f"texts{empty[:10]} {'is' if len(empty) == 1 else 'are'} empty or whitespace; an empty text has "
            "no meaning to embed. Drop those items or replace them with a placeholder before encoding."
        )
    return list(texts), single
