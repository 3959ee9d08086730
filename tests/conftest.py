"""Suite-wide settings.

Hypothesis: ``make test`` is the gate CI runs, so its property tests draw the same
examples on every run (``derandomize``): a failure there is a failure of the change,
never of the draw. ``GOSSIPMIND_HYPOTHESIS=explore`` draws new examples on each run
and keeps failing ones in ``.hypothesis/`` (docs/reliability.md, "Fuzzing").
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("GOSSIPMIND_HYPOTHESIS", "gate"))
