"""The pure helpers of benchmarks/ (their end-to-end runs are in test_smoke.py where cheap)."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_curves", ROOT / "benchmarks" / "plot_curves.py")
plot_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_curves)


def test_reached_finds_the_first_window_at_the_threshold():
    steps = np.arange(1, 13) * 1000
    wins = np.array([0.0, 0.2, 0.8, 0.8, 1.0, 1.0, 0.8, 1.0, 0.8, 0.8, 1.0, 1.0])  # 5 battles per evaluation
    step, best = plot_curves.reached(steps, wins, 0.9, 3)
    assert step == 6000  # wins[3:6] average 0.933 and end at step 6000; wins[2:5] average 0.867
    assert best == np.max(np.convolve(wins, np.ones(3), "valid") / 3)


def test_reached_counts_an_exact_threshold_and_reports_never():
    steps = np.arange(4)
    wins = np.array([0.8, 1.0, 1.0, 0.8])  # averages 0.9, which floating point computes as 0.8999999999999999
    assert plot_curves.reached(steps, wins, 0.9, 4)[0] == 3
    step, best = plot_curves.reached(steps, wins, 0.95, 4)
    assert step is None and best < 0.95
    step, best = plot_curves.reached(steps[:3], wins[:3], 0.5, 4)  # fewer values than the window
    assert step is None and best != best
