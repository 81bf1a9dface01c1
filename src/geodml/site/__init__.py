"""A site: one per data center. Owns the DC's rows, computes aggregates over them
with a local executor, enforces the DC's policy, and serves the Site API."""
