"""Protocol constants, the generated message/stub modules, and message framing."""

from collections.abc import Iterable, Iterator

from geodml.wire._generated import geodml_site_pb2 as pb
from geodml.wire._generated import geodml_site_pb2_grpc as pb_grpc

PROTOCOL_VERSION = 1



SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Site"].full_name  # "geodml.site.v1.Site"


def with_chunks(head, chunks: Iterable[pb.VectorChunk], cls) -> Iterator:
    """A call's message stream: ``head`` (the header fields) carrying the first chunk,
    then one ``cls`` message per further chunk. Lazy: one chunk in memory at a time."""
    it = iter(chunks)
    first = next(it, None)
    if first is not None:
        head.chunk.CopyFrom(first)
    yield head
    for c in it:
        yield cls(chunk=c)


__all__ = ["PROTOCOL_VERSION", "SERVICE_NAME", "pb", "pb_grpc", "with_chunks"]
