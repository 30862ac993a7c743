"""Per-run Q-scale check: where did Q_tot leave the range the rewards allow?

    python benchmarks/divergence.py RUNS_DIR [--bound 0]

For every run folder: env steps reached, first env step at which train/target_mean rose above
--bound (with all-negative rewards, as on MPE simple_spread, a positive mean TD target can only
come from bootstrapped overestimation; the first --skip steps are ignored), the largest
train/grads and the last eval/ep_reward.
"""

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(events, tag):
    return (
        [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", help="folder of TensorBoard run folders")
    parser.add_argument("--bound", type=float, default=0.0, help="largest plausible mean TD target")
    parser.add_argument(
        "--skip", type=int, default=20_000, help="ignore the first env steps (init noise)"
    )
    args = parser.parse_args()
    print(
        f"{'run':52s} {'steps':>8s} {'target>bound at':>16s} {'max grads':>10s} {'last eval':>10s}"
    )
    for run_dir in sorted(Path(args.runs).iterdir()):
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        target, grads = scalars(events, "train/target_mean"), scalars(events, "train/grads")
        evals = scalars(events, "eval/ep_reward")
        crossed = next(
            (step for step, value in target if value > args.bound and step > args.skip), None
        )
        print(
            f"{run_dir.name:52s} {target[-1][0] if target else 0:8d} {crossed if crossed else '-':>16} "
            f"{max(v for _, v in grads) if grads else float('nan'):10.3g} {evals[-1][1] if evals else float('nan'):10.2f}"
        )
