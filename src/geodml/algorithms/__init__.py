"""Training methods over a :class:`~geodml.federation.Federation`."""
