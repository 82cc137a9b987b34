"""The rules of adaptive compute, as plain arithmetic on rewards.

Three decisions share one notion, a reward's distance from the threshold:

- **cascade**: a step's reward ``r`` is *uncertain* when ``|r - threshold| < cascade_band`` (or no
  path could be read); the step is then verified again in the next, costlier mode.
- **sequential sampling** (``adaptive_n``): paths are drawn in small batches until the mean is
  *decisive*, ``|mean - threshold| >= adaptive_margin``, or ``n`` paths are drawn. A fixed margin, not
  a standard-error rule: with the 2-8 paths used in practice a sample standard deviation is
  unreliable (two agreeing paths give zero and would stop on any mean, however close to the
  threshold), while rewards are already probabilities on a fixed [0, 1] scale.
- **early cancellation** (``stop_at_first_error``): once the finished paths force the step to be an
  error whatever the unfinished ones return, those are cancelled (see :class:`Tally`).
"""

from __future__ import annotations

import threading

from genprm.verifier.records import PathStep


def uncertain(reward: float | None, threshold: float, band: float) -> bool:
    """Whether ``reward`` leaves the step undecided at this level: unreadable, or within ``band``."""
    return reward is None or abs(reward - threshold) < band


def decisive(mean: float | None, threshold: float, margin: float) -> bool:
    """Whether sequential sampling may stop: the mean is at least ``margin`` from the threshold."""
    return not uncertain(mean, threshold, margin)


class Tally:
    """Running sums over one level's finished paths of one step, fed by the threads running them.

    ``total`` is the most paths the level can draw (``n``, or the subset asked for). With ``cancel``,
    :attr:`cancelled` turns true once even the best case leaves the level's mean ``m`` an error that
    this level decides: ``m < threshold`` and ``m <= threshold - band`` (``band`` is the cascade
    band, 0 at the last level, so a cancelled level would not have escalated). The best case is
    every one of the ``u`` unfinished or undrawn paths readable with reward 1: with ``r`` readable
    finished paths summing to ``s <= r``, any outcome's mean is at most ``(s + u) / (r + u)``. So
    whatever the cancelled paths would have returned, and however many ``adaptive_n`` would have
    drawn, the uncancelled run reports the same ``first_error``.
    """

    def __init__(self, total: int, threshold: float, band: float, *, cancel: bool) -> None:
        self.total = total
        self.threshold = threshold
        self.band = band
        self.cancel = cancel
        self.finished = 0
        self.readable = 0
        self.reward_sum = 0.0
        self.cancelled = False
        self._lock = threading.Lock()

    def record(self, step: PathStep) -> None:
        """Count a path that returned (cancelled ones do not count: they carry no reward)."""
        if step.cancelled:
            return
        with self._lock:
            self.finished += 1
            if step.readable and step.reward is not None:
                self.readable += 1
                self.reward_sum += step.reward
            if self.cancel and not self.cancelled:
                self.cancelled = self._error_whatever_comes()

    @property
    def mean(self) -> float | None:
        """The mean reward of the readable finished paths (``None`` when there is none)."""
        return self.reward_sum / self.readable if self.readable else None

    def _error_whatever_comes(self) -> bool:
        unfinished = self.total - self.finished
        if self.readable + unfinished == 0:
            return False
        best = (self.reward_sum + unfinished) / (self.readable + unfinished)
        return best < self.threshold and best <= self.threshold - self.band
