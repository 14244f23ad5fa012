"""Inlier models sized to their fit set: what a setting needs, and a smaller one that fits.

With ``N`` fit embeddings of ``D`` dimensions:

* GMM: a full (or tied) covariance estimated from fewer than ``2·D`` embeddings is singular or
  nearly so, and its likelihood then measures little more than the distance to the few fit
  points' subspace; so a full-covariance component needs ``2·D`` embeddings (tied: ``2·D`` in
  all), a diagonal or spherical one ``MIN_PER_DIAGONAL_COMPONENT``. Too few: fewer components;
  none fits: a diagonal covariance, then a spherical one.
* LOF and k-NN: at most half the fit set as neighbours (``(N + 1) // 2``), so that a score
  stays local instead of averaging over the whole set.

``policy`` says what a model does when its setting needs more than it got: ``shrink`` (use the
smaller setting), ``warn`` (fit as asked; the record says it is too small) or ``error``. Either
way :class:`Sizing` records it, and the inlier callback writes it to the log and the results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

POLICIES = ("shrink", "warn", "error")
MIN_PER_DIAGONAL_COMPONENT = 10


@dataclass(frozen=True)
class Sizing:
    """One fit: the model, its fit set (``fit_size`` × ``dim``), the settings it was asked for
    and those it used, and why they differ (``reason``; empty when the fit set was big enough);
    ``domain``: the fit clips' domain when there is one model per domain."""

    model: str
    fit_size: int
    dim: int
    requested: dict[str, Any]
    used: dict[str, Any]
    policy: str = "shrink"
    reason: str = ""
    domain: str = "all"

    @property
    def too_small(self) -> bool:
        return bool(self.reason)

    def describe(self) -> str:
        """One line for the log, e.g. ``GMMInlier on 60 × 128: n_components 16 → 1, ... (reason)``."""
        changes = [f"{k} {v} → {self.used[k]}" for k, v in self.requested.items() if v != self.used[k]]
        what = ", ".join(changes) if changes else f"fitted as asked ({self.policy})"
        return f"{self.model} on {self.fit_size} × {self.dim}: {what} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def of_domain(self, domain: str) -> "Sizing":
        return replace(self, domain=domain)


def gmm_capacity(n: int, dim: int, covariance_type: str) -> int:
    """Most components of ``covariance_type`` that ``n`` embeddings of ``dim`` dimensions support:
    ``2·dim`` per full-covariance component, ``2·dim`` in all for a tied covariance, and
    ``MIN_PER_DIAGONAL_COMPONENT`` per component otherwise (tied and diagonal alike)."""
    if covariance_type == "full":
        return n // (2 * dim)
    if covariance_type == "tied" and n < 2 * dim:
        return 0
    return n // MIN_PER_DIAGONAL_COMPONENT


def gmm_setting(n: int, dim: int, n_components: int, covariance_type: str) -> tuple[dict[str, Any], str]:
    """The largest GMM setting, no larger than asked, that ``n`` embeddings of ``dim`` dimensions
    support (fewer components, then a diagonal, then a spherical covariance), and the reason
    when it is smaller than asked (empty otherwise)."""
    asked = {"n_components": n_components, "covariance_type": covariance_type}
    if n_components <= gmm_capacity(n, dim, covariance_type):
        return asked, ""
    needs = f"{2 * dim} in all" if covariance_type == "tied" else (
        f"{2 * dim if covariance_type == 'full' else MIN_PER_DIAGONAL_COMPONENT} per component")
    reason = (f"{n_components} {covariance_type}-covariance component(s) in {dim} dimensions need "
              f"{needs}, got {n} fit embeddings")
    for kind in dict.fromkeys([covariance_type, "diag", "spherical"]):
        components = min(n_components, gmm_capacity(n, dim, kind))
        if components >= 1:
            return {"n_components": components, "covariance_type": kind}, reason
    return {"n_components": 1, "covariance_type": "spherical"}, reason


def neighbour_setting(n: int, k: int, name: str) -> tuple[dict[str, Any], str]:
    """At most ``(n + 1) // 2`` neighbours, half the fit set rounded up (``name``: the setting's
    name, for the record)."""
    limit = (n + 1) // 2
    if k <= limit:
        return {name: k}, ""
    return {name: limit}, f"{name}={k} on {n} fit embeddings: at most half of them ({limit}) keeps the score local"


@dataclass
class SizeGuard:
    """Applies a ``policy`` to a requested and a fitting setting; keeps the :class:`Sizing`."""

    policy: str = "shrink"
    fixed: dict[str, Any] | None = None  # fit with this setting whatever the fit set (not recorded)
    last: Sizing | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"size_guard must be one of {', '.join(POLICIES)}, got {self.policy!r}")

    def resolve(self, model: str, n: int, dim: int, requested: dict[str, Any], fitting: dict[str, Any],
                reason: str, hint: str) -> dict[str, Any]:
        """The setting to fit with (``fitting`` under ``shrink``, ``requested`` under ``warn``);
        under ``error`` a too-small fit set raises with ``hint`` (the override to change)."""
        if self.fixed is not None:
            return dict(self.fixed)
        if reason and self.policy == "error":
            raise ValueError(f"{model}: {reason}; {hint}, or let it shrink (size_guard=shrink)")
        used = fitting if self.policy == "shrink" else requested
        self.last = Sizing(model, n, dim, dict(requested), dict(used), self.policy, reason)
        return used
