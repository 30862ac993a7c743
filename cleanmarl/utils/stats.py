"""Running statistics of a stream of values (the rewards --normalize-reward divides by)."""

import numpy as np


class RunningStats:
    """Std (Chan et al.'s parallel update) and range, with 0, of all values so far."""

    def __init__(self):
        self.count, self.mean, self.m2, self.low, self.high = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, x):
        self.low, self.high = min(self.low, float(np.min(x))), max(self.high, float(np.max(x)))
        n, mean = len(x), float(np.mean(x))
        delta, total = mean - self.mean, self.count + n
        self.m2 += float(np.sum((x - mean) ** 2)) + delta**2 * self.count * n / total
        self.mean, self.count = self.mean + delta * n / total, total

    @property
    def std(self):  # 0 while all values are equal up to rounding
        std = (self.m2 / max(self.count, 1)) ** 0.5
        return std if std > 1e-6 * max(-self.low, self.high) else 0.0
