"""Exceptions out of nested task groups, as the caller expects them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def unwrapped() -> AsyncIterator[None]:
    """Hand a lone exception out of the nested task groups unwrapped.

    A failure in the block under a node (a test's assertion, an agent's error)
    would otherwise come out wrapped in one group per nursery it crossed — with
    several nodes, deeper than a traceback shows.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, BaseExceptionGroup):
            raise
        raise leaf from None
