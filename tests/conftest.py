"""Hypothesis profiles. ``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) derandomizes the property
tests: CI runs the same examples on every run, so a landing never depends on which random
examples came up. Local runs (``scripts/test``) stay random and keep finding new ones."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
