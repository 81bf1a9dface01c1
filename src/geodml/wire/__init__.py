"""What crosses a DC boundary: the protocol, the vector codec, metering, TLS."""
