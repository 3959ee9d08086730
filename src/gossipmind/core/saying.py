"""Warnings that others can make a node log, bounded in rate.

A peer that can make a node log a line per message or per fresh peer id (ids
cost nothing to make) can fill the operator's disk and drown what matters.
:class:`Bounded` logs at most ``burst`` lines in any ``window`` seconds and
counts the rest; the next line it logs says how many were not.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any


class Bounded:
    def __init__(
        self, logger: logging.Logger, *, burst: int = 5, window: float = 60.0, unsaid: str
    ) -> None:
        """``unsaid``: how the next line names the lines not logged, with ``{}`` for
        their number (e.g. ``"{} more peers … were not said"``)."""
        self.logger = logger
        self.burst = burst
        self.window = window
        self.unsaid_text = unsaid
        self._said: deque[float] = deque()  # when the last lines were logged
        self.unsaid = 0  # lines not logged since the last one that was

    def warning(self, now: float, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at WARNING unless ``burst`` lines were logged in the
        last ``window`` seconds before ``now``; whether it was logged."""
        said = self._said
        while said and said[0] <= now - self.window:
            said.popleft()
        if len(said) >= self.burst:
            self.unsaid += 1
            return False
        said.append(now)
        if self.unsaid:
            msg = f"{msg} ({self.unsaid_text.format(self.unsaid)})"
            self.unsaid = 0
        self.logger.warning(msg, *args)
        return True
