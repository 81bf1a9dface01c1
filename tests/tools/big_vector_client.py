"""Coordinator process for the big-vector test: sends one 2^k float32 vector to a site.

Usage: python big_vector_client.py HOST:PORT LOG2_DIM
Prints JSON: the vector's bytes, this process's RSS before the vector existed and its
peak RSS (VmHWM) after the round, and the loss sum the site returned.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from geodml.federation import Federation
from geodml.wire.codec import WireFormat
from geodml.wire.transport import GrpcTransport


def status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main() -> None:
    address, log2_dim = sys.argv[1], int(sys.argv[2])
    fed = Federation([GrpcTransport("site", address, None, timeout=300)], "home",
                     wire=WireFormat(dtype="float32", allow_sparse=False))
    fed.prepare("logistic", 1e-3, restrict_to_support=False)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS")
    w = np.random.default_rng(0).standard_normal(1 << log2_dim, dtype=np.float32)
    evals = fed.evaluate(w, want_grad=False)
    print(json.dumps({"vector_bytes": w.nbytes, "rss_before": before, "peak": status("VmHWM"),
                      "loss_sum": evals[0].loss_sum, "wan_bytes": fed.meter.total_bytes()}))
    fed.close()


if __name__ == "__main__":
    main()
