"""Learning curves from TensorBoard runs: mean and min/max over seeds, plus a final-value table.

    python benchmarks/plot_curves.py --runs runs --out docs/img [--metric eval/ep_reward] [--reach 0.9] [--wall]

Runs are grouped by env name (the part of the run name before the first "__"), one figure per env, and within it
by script (the run name's exp_name): one curve per script, its seeds the runs in the group. Prints per group: seeds,
steps reached, mean +- std over seeds of the metric's last value and of its mean over the last 10% of steps; with
--reach, per run, when the metric first held that level over --window values in a row (e.g. eval/battle_won >= 0.9
over 10 evaluations). --wall puts minutes of wall time on the x-axis (and in those printed columns) instead of steps.
"""

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load(run_dir, metric, wall=False):
    """(x, values) of a metric: x is the env step, or with wall=True the minutes since the run's first logged value."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if metric not in events.Tags()["scalars"]:
        return None
    points = events.Scalars(metric)
    if wall:
        start = min(
            p.wall_time for tag in events.Tags()["scalars"] for p in events.Scalars(tag)[:1]
        )
        return np.array([(p.wall_time - start) / 60 for p in points]), np.array(
            [p.value for p in points]
        )
    return np.array([p.step for p in points]), np.array([p.value for p in points])


def reached(steps, vals, threshold, window):
    """(first step at which `window` consecutive values average >= threshold, best such average).

    The step is that of the window's last value, or None when no window gets there.
    """
    if len(vals) < window:
        return None, float("nan")
    means = (
        np.convolve(vals, np.ones(window), mode="valid") / window
    )  # means[i]: vals[i : i + window]
    hits = np.flatnonzero(means >= threshold - 1e-9)  # 9 wins in 10 is 0.9 despite rounding
    return (int(steps[hits[0] + window - 1]) if hits.size else None), float(means.max())


if __name__ == "__main__":
    import matplotlib  # only here, so that tests can import reached() without the docs extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs", help="folder of TensorBoard run folders")
    parser.add_argument("--out", default="docs/img", help="where the PNGs go")
    parser.add_argument("--metric", default="eval/ep_reward")
    parser.add_argument(
        "--label", default="", help="a name for this set of runs (title and file name)"
    )
    parser.add_argument(
        "--yscale", default="linear", help="linear, or symlog for metrics that blow up"
    )
    parser.add_argument(
        "--reach",
        type=float,
        help="also print per run the first step where --window values in a row average >= this",
    )
    parser.add_argument(
        "--window", type=int, default=10, help="consecutive values averaged for --reach"
    )
    parser.add_argument(
        "--wall", action="store_true", help="x-axis: minutes of wall time instead of env steps"
    )
    args = parser.parse_args()
    groups = defaultdict(lambda: defaultdict(list))  # env name -> script (exp_name) -> runs
    for run_dir in sorted(Path(args.runs).iterdir()):
        curve = load(run_dir, args.metric, args.wall)
        if curve is not None:
            env_name, exp_name = run_dir.name.split("__")[:2]
            groups[env_name][exp_name].append((run_dir.name, curve))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(
        f"{'env':32s} {'script':18s} {'seeds':>5s} {'steps':>9s} {'last':>16s} {'last 10% of steps':>18s}"
    )
    for env_name, scripts in groups.items():
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for color, (exp_name, runs) in zip(
            ("black", "tab:blue", "tab:red", "tab:green"), scripts.items(), strict=False
        ):
            grid = np.linspace(0, min(c[0][-1] for _, c in runs), 200)
            values = np.stack([np.interp(grid, steps, vals) for _, (steps, vals) in runs])
            last = np.array([vals[-1] for _, (_, vals) in runs])
            tail = np.array([vals[steps >= 0.9 * steps[-1]].mean() for _, (steps, vals) in runs])
            print(
                f"{env_name:32s} {exp_name:18s} {len(runs):5d} {int(grid[-1]):9d} {last.mean():8.3f} +- {last.std():5.3f}"
                f" {tail.mean():9.3f} +- {tail.std():5.3f}"
            )
            for name, (steps, vals) in runs if args.reach is not None else []:
                step, best = reached(steps, vals, args.reach, args.window)
                when = f"first at step {step}" if step is not None else "never"
                print(
                    f"  {name}: {args.window} values in a row average >= {args.reach}: {when} (best {best:.3f})"
                )
            for _, (steps, vals) in runs:
                ax.plot(steps, vals, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(
                grid, values.mean(0), color=color, label=f"{exp_name}: mean of {len(runs)} seeds"
            )
            ax.fill_between(grid, values.min(0), values.max(0), color=color, alpha=0.12)
        ax.set_xlabel("wall time (minutes)" if args.wall else "environment steps")
        ax.set_ylabel(args.metric)
        ax.set_yscale(args.yscale)
        title = f"{next(iter(scripts))}.py on {env_name}" if len(scripts) == 1 else env_name
        ax.set_title(
            title + (f" ({args.label})" if args.label else "") + ", min-max shaded", fontsize=9
        )
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        label = f"_{args.label.replace(' ', '_')}" if args.label else ""
        prefix = "_".join(scripts)
        name = (
            f"{prefix}_{env_name}{label}_{args.metric.replace('/', '_')}{'_wall' * args.wall}.png"
        )
        fig.savefig(Path(args.out) / name, dpi=110)
        plt.close(fig)
