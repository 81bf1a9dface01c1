"""Message framing: a call's header message carrying the first chunk of its vectors,
then one message per further chunk (:mod:`geodml.wire.codec` makes the chunks)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def with_chunks(head, chunks: Iterable, cls) -> Iterator:
    """A call's message stream: ``head`` (the header fields) carrying the first chunk,
    then one ``cls`` message per further chunk. Lazy: one chunk in memory at a time."""
    it = iter(chunks)
    first = next(it, None)
    if first is not None:
        head.chunk.CopyFrom(first)
    yield head
    for c in it:
        yield cls(chunk=c)


__all__ = ["with_chunks"]
