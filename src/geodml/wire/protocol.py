"""Protocol constants and the generated message/stub modules, in one place."""

from geodml.wire._generated import geodml_site_pb2 as pb
from geodml.wire._generated import geodml_site_pb2_grpc as pb_grpc

PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "pb", "pb_grpc"]
