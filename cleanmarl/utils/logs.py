"""The values a run keeps between two logs (tracking.Run.add, Run.log: an episode's rollout/*, an
update's train/*): their means, and what a saved training state may hold of them."""

import numpy as np
import torch


def mean(values):
    """The mean of numbers (float64) or of one-number tensors (in their dtype, on the device of the
    last: a resumed run's were saved from the CPU)."""
    if isinstance(values[0], torch.Tensor):
        return torch.stack([v.to(values[-1].device) for v in values]).mean().item()
    return float(np.mean(values))


def logged_values(values):
    """Whether `values` (one tag's, read from a saved state) is what Run.add() keeps: a list, not
    empty, of numbers or of one-number float tensors."""
    if not isinstance(values, list) or not values:
        return False
    if isinstance(values[0], torch.Tensor):
        tensors = all(isinstance(v, torch.Tensor) for v in values)
        return tensors and all(v.numel() == 1 and v.is_floating_point() for v in values)
    return all(isinstance(v, int | float) for v in values)
