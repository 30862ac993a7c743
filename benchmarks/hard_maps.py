"""QMIX on SMAClite's hard maps (docs/smaclite_hard_maps.md): the results table and figures from a sweep of them.

    python benchmarks/hard_maps.py sweeps/hard_maps --keep benchmarks/results/hard_maps --out docs/img/hard_maps

writes into --out: curves.png, aggregate.png, table.md (the docs page's table) and summary.md (the home page's rows).
--keep DIR first copies each finished run's records into DIR (only what the report reads: meta.json, done, the
evaluations, the best checkpoint's re-evaluation and the physics line of its log; no checkpoints, no training state)
and then reads DIR instead, so the table is made from records kept in the repository: a sweep's runs from several
machines or sessions add up there, and `python benchmarks/hard_maps.py benchmarks/results/hard_maps` redraws it.

Reads the sweep with cleanmarl.report (each combination's newest run). Per map: the seeds run and how many are finished
(`done`); the env steps to 90% won (the first evaluation at which it and the 9 before it average >= 0.9, the sweep's
--stop-at rule), mean with its 95% bootstrap CI over the seeds that got there and "k/n"; the final win rate (the mean
of the last 10 evaluations), mean and CI over seeds; the absolute metric (the best checkpoint re-evaluated with 10x
the episodes, --absolute 10), mean over seeds; the wall time per run (the run's own clock, summed over its resumes);
PyMARL2's QMIX on SC2.4.10 beside it, as its README lists it (a different simulator: StarCraft II, not SMAClite).
Figures: the win rate of each run against env steps and against wall time, one panel per map (`curves.png`: each
evaluation faint, the mean over it and the 9 before it, which --stop-at reads, solid), and the
aggregate over maps (`aggregate.png`): the IQM of the finished runs' best-checkpoint win rates (the absolute metric;
the final window where it is missing) with rliable's stratified bootstrap 95% CI (Agarwal et al., 2021), over the
grid of maps x seeds with the most finished runs (common_seeds).
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cleanmarl import report  # noqa: E402

WINDOW, THRESHOLD, SEEDS = (
    10,
    0.9,
    3,
)  # the sweep's --stop-window, --stop-at, and the grid's seeds per map
# PyMARL2 README (Hu et al., 2021), QMIX on SC2.4.10: "general" = its re-evaluation with one set of hyperparameters,
# "fine-tuned" = per-map tuned (3s5z_vs_3s6z with 4 envs). None where the README lists no number.
PYMARL2 = {
    "5m_vs_6m": (0.90, 0.90),
    "MMM2": (1.00, 1.00),
    "3s5z_vs_3s6z": (0.75, 0.85),
    "corridor": (1.00, 1.00),
    "27m_vs_30m": (1.00, 1.00),
    "2c_vs_64zg": (1.00, 1.00),
    "3s_vs_5z": (1.00, 1.00),
    "10m_vs_11m": (None, None),
}
SWEEP = (
    "python -m cleanmarl.sweep --scripts {script} --envs {env} --seeds 1-3 --out sweeps/hard_maps --stop-at 0.9 "
    "--stop-window 10 --absolute 10 -- --save-model --total-timesteps 2000000"
)


def final_win_rate(run, window=WINDOW):
    """The mean win rate of a run's last `window` evaluations."""
    return float(report.scores(run, "battle_won")[-window:].mean())


def absolute_win_rate(run):
    """The best checkpoint's win rate over the sweep's --absolute re-evaluation, else the final win rate: the score
    the aggregate takes (Gorsane et al., 2022; a stopped run's final window is >= 0.9 by the stop rule itself)."""
    return float(np.mean(run["absolute"]["battle_won"])) if run["absolute"] else final_win_rate(run)


def mean_ci(values, spec=".2f"):
    """'mean [low, high]' over seeds (95% percentile bootstrap), or the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    mean, low, high = report.bootstrap_ci(values)
    return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


def finished(run):
    """Whether the sweep marked the run finished (its folder's `done`: 2M steps, or stopped at 90%)."""
    return (run["folder"] / "done").exists()


def map_order(runs):
    """The maps run, in PYMARL2's order, then any other."""
    maps = {r["env"] for r in runs}
    return [m for m in PYMARL2 if m in maps] + sorted(maps - set(PYMARL2))


def rows(runs):
    """One dict per map and line (script and flag set), maps in map_order."""
    out = []
    for env in map_order(runs):
        for line in sorted({r["line"] for r in runs if r["env"] == env}):
            members = sorted(
                (r for r in runs if (r["env"], r["line"]) == (env, line)), key=lambda r: r["seed"]
            )
            out.append(row(env, line, members))
    return out


def row(env, line, members):
    """The table's numbers for one map and line over its runs (members, by seed)."""
    done = [r for r in members if finished(r)]
    reached = [
        s for r in done if (s := report.steps_to(r, "battle_won", THRESHOLD, WINDOW)) is not None
    ]
    absolute = [absolute_win_rate(r) for r in done if r["absolute"]]
    return dict(
        env=env,
        script=line,
        seeds=[r["seed"] for r in members],
        done=len(done),
        steps_to=f"{mean_ci(reached, ',.0f') if reached else '-'} ({len(reached)}/{len(done)})"
        if done
        else "-",
        final=mean_ci([final_win_rate(r) for r in done]) if done else "-",
        absolute=mean_ci(absolute) if absolute else "-",
        wall=(f"{np.mean([r['wall'] for r in done]) / 60:.0f} min" if done else "-"),
        under_way=[
            (r["seed"], int(r["steps"][-1]), final_win_rate(r)) for r in members if not finished(r)
        ],
        pymarl2=PYMARL2.get(env, (None, None)),
    )


def markdown(table):
    pct = lambda p: "-" if p is None else f"{p:.0%}"  # noqa: E731
    lines = [
        "| map | script | seeds finished | env steps to 90% won (k/n) | final win rate | best checkpoint, 50 battles "
        "| wall time per run | PyMARL2 on SC2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| `{r['env']}` | `{r['script']}` | {r['done']} of {SEEDS} | {r['steps_to']} | {r['final']} "
            f"| {r['absolute']} | {r['wall']} | {pct(r['pymarl2'][0])} / {pct(r['pymarl2'][1])} |"
        )
    under_way = [f"`{r['env']}` seed {s} at {n:,} steps ({w:.2f} won over its last 10 evaluations)"
                 for r in table for s, n, w in r["under_way"]]  # fmt: skip
    if under_way:
        lines += ["", "Under way: " + "; ".join(under_way) + "."]
    lines += ["", "Commands, one per row:", "", "```bash"]
    lines += [SWEEP.format(script=r["script"], env=r["env"]) for r in table]
    return "\n".join(lines + ["```"])


def algorithm(line):
    """The aggregate's name for a line: qmix_memefficient.py is qmix.py's QMIX (the same losses for the same seed) with
    another buffer, so their maps pool; other scripts and flag sets stay apart."""
    return line.replace("qmix_memefficient", "qmix")


def aggregate(runs):
    """[(algorithm, IQM, low, high, maps, seeds)]: the best checkpoints' win rates over maps x seeds that each
    algorithm finished (rliable's IQM and stratified bootstrap CI needs every seed on every map), see common_seeds."""
    out = []
    for name in sorted({algorithm(r["line"]) for r in runs}):
        done = [r for r in runs if finished(r) and algorithm(r["line"]) == name]
        maps, seeds = common_seeds(
            {m: {r["seed"] for r in done if r["env"] == m} for m in {r["env"] for r in done}}
        )
        if seeds:
            final = {(r["env"], r["seed"]): absolute_win_rate(r) for r in done}
            scores = np.array([[final[m, s] for m in maps] for s in seeds])
            out.append((name, *report.aggregate({name: scores})[name], maps, seeds))
    return out


def common_seeds(seeds_of):
    """seeds_of: map -> its finished seeds. -> (maps, seeds): the grid with the most runs in which every map finished
    every seed, among the seed sets of one map or of all maps, preferring grids of two maps or more. So a map finished
    on one seed so far does not shrink the aggregate of the others' three seeds to that one seed."""
    options = [*seeds_of.values(), set.intersection(*seeds_of.values())] if seeds_of else []
    grids = [(sorted(m for m in seeds_of if s <= seeds_of[m]), sorted(s)) for s in options if s]
    return max(
        grids, key=lambda g: (len(g[0]) > 1, len(g[0]) * len(g[1]), len(g[0])), default=([], [])
    )


def plot(runs, out, agg):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = map_order(runs)
    fig, axes = plt.subplots(2, len(maps), figsize=(3.2 * len(maps), 5.6), squeeze=False)
    for col, env in enumerate(maps):
        for run in sorted((r for r in runs if r["env"] == env), key=lambda r: r["seed"]):
            won = report.scores(run, "battle_won")
            window = np.array(
                [won[max(0, k - WINDOW + 1) : k + 1].mean() for k in range(len(won))]
            )  # --stop-at's
            for row, (x, scale) in enumerate((("steps", 1e3), ("times", 60))):
                line = axes[row, col].plot(
                    run[x] / scale, window, lw=1.2, label=f"seed {run['seed']}"
                )[0]
                axes[row, col].plot(run[x] / scale, won, lw=0.5, alpha=0.3, color=line.get_color())
        axes[0, col].set_title(env)
        axes[0, col].set_xlabel("env steps (thousands)")
        axes[1, col].set_xlabel("wall time (minutes)")
        for row in range(2):
            axes[row, col].axhline(THRESHOLD, color="grey", lw=0.6, ls=":")
            axes[row, col].set_ylim(-0.03, 1.03)
            axes[row, col].legend(fontsize=7, loc="lower right")
    for row in range(2):
        axes[row, 0].set_ylabel("greedy battles won")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    if agg:
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(agg)))
        for k, (_, iqm, low, high, maps, seeds) in enumerate(agg):
            ax.barh([k], [iqm], xerr=[[iqm - low], [high - iqm]], color="tab:blue", capsize=4)
            ax.text(
                0.02,
                k,
                f"{len(maps)} maps x {len(seeds)} seeds",
                va="center",
                color="white",
                fontsize=8,
            )
        ax.set_yticks(range(len(agg)), [a[0] for a in agg])
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("IQM of the best checkpoints' win rate (95% CI)")
        fig.tight_layout()
        fig.savefig(out / "aggregate.png", dpi=110)
        plt.close(fig)


def keep(sweep_dir, keep_dir):
    """Copy each finished run of sweep_dir (its combination folder has `done`) into keep_dir, as the report reads it:
    meta.json, done, the physics and sweep lines of log.txt, and of its newest run directory evaluations.jsonl,
    models.json and the best checkpoint's re-evaluation. A run already kept is replaced. -> the names copied"""
    copied = []
    for folder in sorted(p.parent for p in Path(sweep_dir).glob("*/done")):
        run_dir = report.current_run(folder)
        if run_dir is None:
            continue
        target = Path(keep_dir) / folder.name
        shutil.rmtree(target, ignore_errors=True)
        (target / run_dir.relative_to(folder)).mkdir(parents=True)
        for name in ("meta.json", "done"):
            shutil.copy(folder / name, target / name)
        log = (
            (folder / "log.txt").read_text(errors="replace").splitlines()
            if (folder / "log.txt").exists()
            else []
        )
        said = [
            line for line in log if line.startswith(("SMAClite physics", "sweep:"))
        ]  # physics(), the stop
        (target / "log.txt").write_text("".join(line + "\n" for line in said))
        names = [report.EVAL_FILE, report.MODELS_FILE]
        if (run_dir / report.MODELS_FILE).exists() and (
            best := json.loads((run_dir / report.MODELS_FILE).read_text()).get("best")
        ):
            names.append(
                best["path"].replace(".cleanmarl_model", ".eval.json")
            )  # report.reevaluation() reads it
        for name in names:
            if (run_dir / name).exists():
                (target / run_dir.relative_to(folder) / name).parent.mkdir(
                    parents=True, exist_ok=True
                )
                shutil.copy(run_dir / name, target / run_dir.relative_to(folder) / name)
        copied.append(folder.name)
    return copied


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", default="docs/img/hard_maps", help="folder of the figures")
    parser.add_argument(
        "--keep", metavar="DIR", help="copy the finished runs' records into DIR, then read DIR"
    )
    args = parser.parse_args(argv)
    if args.keep:
        copied = keep(args.sweep_dir, args.keep)
        print(
            f"hard_maps: kept {len(copied)} finished runs' records in {args.keep}", file=sys.stderr
        )
        args.sweep_dir = args.keep
    runs = [r for r in report.load(args.sweep_dir) if "battle_won" in r["records"][0]]
    if not runs:
        sys.exit(f"hard_maps: error: no SMAClite evaluation records under {args.sweep_dir}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    plot(runs, out, agg)
    table = rows(runs)
    hours = sum(r["wall"] for r in runs) / 3600
    text = (
        markdown(table)
        + f"\n\nWall time of these runs together: {hours:.1f} hours of one CPU core each.\n"
    )
    text += f"\nSMAClite physics, as the runs printed it: {physics(runs)}.\n"
    for name, iqm, low, high, maps, seeds in agg:
        ci = f"95% CI [{low:.3f}, {high:.3f}]" if len(seeds) > 1 else "one seed per map: no CI"
        text += (
            f"\nIQM of the best checkpoints' win rate, `{name}`, over {', '.join(f'`{m}`' for m in maps)} (seeds "
            f"{', '.join(map(str, seeds))}): {iqm:.3f}, {ci}.\n"
        )
    (out / "table.md").write_text(text)
    (out / "summary.md").write_text(summary(table))
    print(text)
    return 0


def summary(table):
    """The home page's rows: map, script, seeds finished, steps to 90%, best checkpoint's win rate, PyMARL2's."""
    pct = lambda p: "-" if p is None else f"{p:.0%}"  # noqa: E731
    lines = [
        "| map | script | seeds finished | env steps to 90% won | best checkpoint, 50 battles won | PyMARL2 on SC2 |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| [`{r['env']}`](smaclite_hard_maps.md) | `{r['script']}` | {r['done']} of {SEEDS} "
            f"| {r['steps_to']} | {r['absolute']} | {pct(r['pymarl2'][0])} / {pct(r['pymarl2'][1])} |"
        )
    return "\n".join(lines) + "\n"


def physics(runs):
    """What the runs' logs say of SMAClite's physics ("SMAClite physics: ..."; the numpy and the C++ RVO2 are different
    simulators in detail), counted over the runs."""
    said = {}
    for run in runs:
        log = run["folder"] / "log.txt"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        for line in {
            line.split(" (")[0].removeprefix("SMAClite physics: ")
            for line in lines
            if "SMAClite physics" in line
        }:
            said[line] = said.get(line, 0) + 1
    return (
        "; ".join(f"{k} ({n} of {len(runs)} runs)" for k, n in sorted(said.items()))
        or "not printed"
    )


if __name__ == "__main__":
    sys.exit(main())
