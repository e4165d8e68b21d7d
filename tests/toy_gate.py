"""A gate plug-in that lives outside registry/ (registry/README.md, "Adding a gate"): refuse a
model whose file is larger than the policy's cap.

    gates:
      size_cap: {mb: 0.3}      # left out: the gate is off
"""
from __future__ import annotations

from registry.gates import ALIAS, Gate, register_gate
from registry.policy_types import Number, StrictModel


class SizeCap(StrictModel):
    mb: Number  # the largest model_size_mb allowed


@register_gate
class SizeCapGate(Gate):
    name, key, stage = "size_cap", "size_cap", ALIAS
    params, default = SizeCap | None, None
    summary = "the model file is at most `mb` megabytes"

    def metrics(self, settings):
        return ("model_size_mb",) if settings else ()

    def check(self, candidate, settings, ctx, rule=None):
        if settings is None:
            return None
        size = candidate.value("model_size_mb")
        if size is None or size > settings.mb:
            return self.result(False, f"model_size_mb {size} is over the cap of {settings.mb:g} MB")
        return self.result(True, f"model_size_mb {size:g} <= {settings.mb:g} MB")
