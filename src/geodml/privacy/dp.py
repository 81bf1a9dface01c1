"""Differential privacy of what a site sends: clipped, noisy gradient sums and a ledger.

Mechanism (per release, at the site). With per-row gradients ``g_i = l'(z_i) x_i`` of
the loss at margin ``z_i = x_i.w``, each row's contribution is clipped to norm ``C``::

    s = sum_i g_i * min(1, C / ||g_i||),     ||g_i|| = |l'(z_i)| ||x_i||

and the site sends ``s + N(0, (sigma C)^2 I)``. Adding or removing one row moves ``s``
by at most ``C``, so one release is the Gaussian mechanism with noise multiplier
``sigma``; the regularizer's ``lambda w`` is added by the coordinator and costs nothing.
Nothing else leaves a DP session: no loss sums, no line searches, no local solves.

Accounting: the releases of a site compose over rounds and over jobs. Each site keeps
a ledger (the noise multiplier of every release) and an RDP accountant from Google's
``dp-accounting`` library turns it into the ``epsilon`` spent at the policy's ``delta``.
A release that would take a site past its budget is refused before anything is sent.

Noise comes from a generator seeded with the site's secret, the job's nonce and the
round: a restarted site answers a replayed round with the same bits (so the coordinator
can recover it), and a round charged once is never charged again. The ledger keeps the
digest of the point each release was computed at and refuses the same (nonce, round) at
another point: otherwise the difference of two replies would carry no noise at all.

Not covered by the budget: the counts a site reports openly (rows, positives, nonzeros
in ``Describe``). A private job never restricts vectors to the site's feature support,
which would reveal which features its rows touch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import dp_accounting
import numpy as np
import scipy.sparse as sp
from dp_accounting import rdp

from geodml.errors import GeodmlError
from geodml.models.losses import Loss

MAX_NOISE_MULTIPLIER = 1e4  # more noise than this drowns any gradient: refuse instead


class PrivacyBudgetError(GeodmlError):
    """A release would take a site past its (epsilon, delta) budget."""


class PrivacyReplayError(GeodmlError):
    """A release id asked again at another input (its noise would cancel)."""


def epsilon_spent(noise_multipliers: Sequence[float], delta: float) -> float:
    """``epsilon`` at ``delta`` of Gaussian releases with these noise multipliers (RDP
    accountant, ``dp-accounting``); 0 for none."""
    if not noise_multipliers:
        return 0.0
    accountant = rdp.RdpAccountant()
    for z, count in _grouped(noise_multipliers):
        accountant.compose(dp_accounting.GaussianDpEvent(z), count)
    return float(accountant.get_epsilon(delta))


def _grouped(values: Sequence[float]) -> list[tuple[float, int]]:
    counts: dict[float, int] = {}
    for v in values:
        counts[float(v)] = counts.get(float(v), 0) + 1
    return sorted(counts.items())


def calibrate_noise(epsilon: float, delta: float, releases: int,
                    spent: Sequence[float] = ()) -> float:
    """The smallest noise multiplier ``sigma`` such that ``releases`` more Gaussian
    releases, after the ``spent`` ones, stay within ``(epsilon, delta)``."""
    if releases < 1:
        raise GeodmlError("at least one release is needed")
    if epsilon_spent(spent, delta) >= epsilon:
        raise PrivacyBudgetError(
            f"the budget epsilon = {epsilon:g} is already spent "
            f"({epsilon_spent(spent, delta):.4g} at delta = {delta:g})")

    def event(z: float) -> dp_accounting.DpEvent:
        new = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), releases)
        old = [dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(v), n)
               for v, n in _grouped(spent)]
        return dp_accounting.ComposedDpEvent([*old, new])

    try:
        z = dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant, event, epsilon, delta,
            dp_accounting.LowerEndpointAndGuess(1e-3, 1.0))
    except (ValueError, dp_accounting.mechanism_calibration.NoBracketIntervalFoundError):
        z = math.inf
    if not z <= MAX_NOISE_MULTIPLIER:
        raise PrivacyBudgetError(
            f"the budget left (epsilon {epsilon - epsilon_spent(spent, delta):.3g} of "
            f"{epsilon:g}) would need a noise multiplier above {MAX_NOISE_MULTIPLIER:g} for "
            f"{releases} releases")
    return float(z)


class PrivacyLedger:
    """A site's spent budget: one entry per release, keyed so a release is charged once.

    ``path`` (optional) keeps the ledger across restarts: a JSON file rewritten atomically
    on every charge; without it the ledger lives as long as the site process.
    """

    def __init__(self, epsilon: float, delta: float, path: str | os.PathLike | None = None,
                 secret: bytes = b""):
        """``secret``: the site's noise secret; the ledger keeps its fingerprint, so that
        a site restarted with another secret (no TLS key) refuses to answer a release it
        already made: its noise could not be drawn the same again."""
        self.epsilon, self.delta = float(epsilon), float(delta)
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.releases: dict[str, float] = {}  # release id -> noise multiplier
        self.inputs: dict[str, str] = {}  # release id -> digest of what it was computed at
        self.secret_id = hashlib.blake2b(secret, digest_size=16,
                                         person=b"geodml-dp-ledger").hexdigest()
        self.secrets: dict[str, str] = {}  # release id -> fingerprint of its noise secret
        if self.path is not None and self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            for key, (z, digest, secret) in data["releases"].items():
                self.releases[str(key)], self.inputs[str(key)] = float(z), str(digest)
                self.secrets[str(key)] = str(secret)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise GeodmlError(f"{self.path}: not a privacy ledger ({e}); a site must not "
                              "forget what it spent, so it will not start") from None
        if any(not (np.isfinite(v) and v > 0) for v in self.releases.values()):
            raise GeodmlError(f"{self.path}: a noise multiplier is not positive")

    @property
    def spent(self) -> float:
        return epsilon_spent(list(self.releases.values()), self.delta)

    def charge(self, release: str, noise_multiplier: float, site: str, input_digest: str
               ) -> None:
        """Record the release, or refuse it if over budget. A release id (job nonce and
        round: it fixes the noise) is charged once and answers one input only: asked
        again at the same input it returns the same bits, which reveals nothing new;
        asked at another input, the two replies' difference would be noise-free."""
        with self._lock:
            if release in self.releases:
                if self.secrets.get(release) != self.secret_id:
                    raise PrivacyReplayError(
                        f"site {site}: release {release} was made with another noise secret "
                        "(the site restarted without its TLS key); it is not answered again")
                if self.inputs.get(release) != input_digest:
                    raise PrivacyReplayError(
                        f"site {site}: release {release} was already answered at another "
                        "point; its noise is not used twice")
                return
            after = epsilon_spent([*self.releases.values(), noise_multiplier], self.delta)
            if after > self.epsilon * (1 + 1e-9):
                raise PrivacyBudgetError(
                    f"site {site}: privacy budget exhausted: this release would spend "
                    f"epsilon {after:.4g} of {self.epsilon:g} (delta {self.delta:g}); "
                    f"{len(self.releases)} releases so far")
            self.releases[release] = float(noise_multiplier)
            self.inputs[release] = input_digest
            self.secrets[release] = self.secret_id
            if self.path is not None:
                tmp = self.path.with_suffix(self.path.suffix + ".tmp")
                entries = {k: [z, self.inputs[k], self.secrets[k]]
                           for k, z in self.releases.items()}
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump({"epsilon": self.epsilon, "delta": self.delta,
                               "releases": entries}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)


def clipped_gradient_sum(X: sp.csr_matrix, y: np.ndarray, w: np.ndarray, loss: Loss,
                         clip: float, row_norms: np.ndarray | None = None) -> np.ndarray:
    """``sum_i l'(z_i) x_i min(1, C / (|l'(z_i)| ||x_i||))`` (see the module docstring)."""
    if row_norms is None:
        row_norms = row_l2_norms(X)
    d = loss.deriv(y, X @ w)
    size = np.abs(d) * row_norms
    over = size > clip
    scale = np.where(over, clip / np.where(over, size, 1.0), 1.0)
    return X.T @ (d * scale)


def row_l2_norms(X: sp.csr_matrix) -> np.ndarray:
    sq = X.multiply(X) if X.dtype == np.float64 else X.astype(np.float64).multiply(X)
    return np.sqrt(np.asarray(sq.sum(axis=1)).ravel())


def gaussian_noise(secret: bytes, nonce: bytes, round_id: int, n: int, std: float
                   ) -> np.ndarray:
    """``N(0, std^2 I_n)`` from a generator keyed by (site secret, job nonce, round)."""
    seed = hashlib.blake2b(secret + nonce + round_id.to_bytes(8, "little"),
                           digest_size=32, person=b"geodml-dp-noise").digest()
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint64))
    return rng.normal(0.0, std, n)
