"""What vendors that erase by *job* have in common: keys go in batches, one job
each, and a retried submit must never file a batch a second time.

A connector supplies how to file one batch and how to find the newest job
already filed for each batch; these helpers do the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

B = TypeVar("B")
Found = Mapping[str, Any] | None


def file_missing(
    batches: Sequence[B],
    earlier: Sequence[Found],
    file: Callable[[B], str],
    *,
    id_field: str,
) -> list[str]:
    """Job ids for every batch: the earlier job where there is one, else a new one."""
    return [
        str(found[id_field]) if found else file(batch)
        for batch, found in zip(batches, earlier, strict=True)
    ]


def all_filed(found: Sequence[Found], *, id_field: str) -> str | None:
    """The comma-joined job ids when every batch has a job, else None (so a
    resubmit files the rest)."""
    if not found or any(f is None for f in found):
        return None
    return ",".join(str(f[id_field]) for f in found if f)
