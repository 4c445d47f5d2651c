"""Policies by name, as the job file's `policy:` section names them."""

from __future__ import annotations

from functools import partial

from onepiece_hpc.runtime.policy.adaptive import AdaptiveSettings, adaptive, oracle, static
from onepiece_hpc.runtime.policy.model import POLICIES, Policy
from onepiece_hpc.jobfile.job import PolicySettings


def make_policy(settings: PolicySettings) -> Policy:
    if settings.name == "static":
        return static
    if settings.name == "adaptive":
        return partial(adaptive, settings=AdaptiveSettings(settings.window, settings.margin,
                                                           settings.max_move_share))
    if settings.name == "oracle":
        return oracle
    raise ValueError(f"unknown policy {settings.name!r}; choose one of {', '.join(POLICIES)}")
