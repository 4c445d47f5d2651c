"""Policies by name, as the job file's `policy:` section names them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from onepiece_hpc.runtime.policy.adaptive import AdaptiveSettings, adaptive, oracle, static
from onepiece_hpc.runtime.policy.model import Policy

POLICIES = ("static", "adaptive")


@dataclass(frozen=True)
class PolicySettings:
    """The job file's `policy:` section."""

    name: str = "static"
    interval_s: float = 2.0       # seconds between decisions
    cooldown_s: float = 10.0      # a rank that moved stays put at least this long
    window: float = 4.0
    margin: float = 1.5
    max_move_share: float = 0.25


def make_policy(settings: PolicySettings) -> Policy:
    if settings.name == "static":
        return static
    if settings.name == "adaptive":
        return partial(adaptive, settings=AdaptiveSettings(settings.window, settings.margin,
                                                           settings.max_move_share))
    if settings.name == "oracle":
        return oracle
    raise ValueError(f"unknown policy {settings.name!r}; choose one of {', '.join(POLICIES)}")
