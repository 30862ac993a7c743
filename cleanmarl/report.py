"""The report of a sweep (docs/benchmarks.md): curves with bootstrap CIs over seeds, an aggregate over envs with rliable,
a table, and marl-eval's JSON layout, from each run's evaluation records (evaluations.jsonl).

    python -m cleanmarl.report sweeps/lambda              # writes sweeps/lambda/report/: report.md, *.png, *.csv, *.json
    python -m cleanmarl.report sweeps/lambda --keep benchmarks/results/lambda   # the results store
    python -m cleanmarl.report benchmarks/results/lambda  # a store folder: writes ./report/lambda/

Per env: the greedy evaluation return (or battle_won, --metric) against env steps and against wall time (the run's own
clock, summed over its resumes), the mean over seeds shaded with the range over 2-4 seeds or a
95% percentile bootstrap CI over 5 or more (2000 resamples), one line per script and flag set.
Aggregate: each run's final score (its last evaluation's mean) normalised per env to [0, 1] by the lowest and highest
final score of any run on that env (a win rate is kept as it is), then the interquartile mean (IQM) with stratified
bootstrap CIs, the probability of improvement between every two lines, and performance profiles (rliable: Agarwal et
al., 2021), over the seeds actually run. The table: per line the final evaluation of the runs
that ran their full length (each seed shown; a run stopped by --stop-at is listed apart, never
averaged in) and the best evaluation, each a mean over seeds with the range (2-4 seeds) or a 95% CI
(5 or more), the
absolute metric where the sweep ran it (--absolute: the best checkpoint re-evaluated with 10x the episodes, Gorsane et al., 2022), with
--threshold X the env steps to X (the first evaluation at which the mean over it and the --window - 1 before it
reaches X; over the seeds that reached it, "k/n" saying how many did), env steps, wall time (to the last evaluation),
steps/s. A combination's run is its newest run directory (the one the sweep continues).
"""

import argparse
import csv
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from cleanmarl.utils.layout import (
    ABSOLUTE_FILE,
    EVAL_FILE,
    MODELS_FILE,
    read_json,
    read_records,
    reevaluation_file,
    write_json,
    write_records,
)

REPS = 2000
MIN_CI_SEEDS = 5  # fewer seeds get a range, not an interval
ENDED, ABSOLUTE = "ended.json", ABSOLUTE_FILE  # the results store's (keep)


def load(sweep_dir):
    """Every run of a sweep, or of a folder of the results store (keep) -> list of dicts: env, line
    (script and flag set), seed, steps, times, records, wall time, absolute (the re-evaluation),
    ended (how the run ended: ending), folder (the combination's), meta (its meta.json)."""
    runs = []
    for meta_path in sorted(Path(sweep_dir).glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        stored = (meta_path.parent / EVAL_FILE).exists()  # the store's layout: one folder a run
        run_dir = meta_path.parent if stored else current_run(meta_path.parent)
        records = (
            read_records(run_dir / EVAL_FILE) if run_dir else []
        )  # a partial last line: left out
        if not records:
            continue
        records.sort(key=lambda r: r["step"])
        if all("elapsed" in r for r in records):  # the run's own clock, summed over its resumes
            times = np.array([r["elapsed"] for r in records])
        else:  # records written before the clock: the calendar from the first evaluation on (a resume's break counts)
            times = np.array([r["time"] - records[0]["time"] for r in records])
        line = meta["script"].removesuffix(".py") + (
            f" {meta['flag_set']}" if meta["flag_set"].strip() else ""
        )
        absolute = reevaluation(run_dir, meta_path.parent)
        steps = np.array([r["step"] for r in records])
        runs.append(dict(env=meta["env"], line=line, seed=meta["seed"], records=records,
                         wall=float(times[-1]), absolute=absolute, steps=steps, times=times,
                         ended=ending(meta_path.parent), folder=meta_path.parent, meta=meta))  # fmt: skip
    return runs


def ending(folder):
    """How the run in a sweep's or the store's folder ended: {"ended": "completed" | "stopped" |
    "failed", "step", ["by"] (the --stop-at rule), ...}, or None while it is under way."""
    for path in (Path(folder) / name for name in (ENDED, "done", "failed")):
        if path.exists():  # an older sweep's `done` holds its seconds alone
            found = read_json(path)
            return found if isinstance(found, dict) else {"ended": "completed"}
    return None


def report_dir(sweep_dir):
    """Where the report goes by default: SWEEP_DIR/report for a sweep; ./report/NAME for a folder
    of the results store, whose records are committed and never share a folder with output."""
    metas = Path(sweep_dir).glob("*/meta.json")
    stored = any((m.parent / EVAL_FILE).exists() for m in metas)  # the store's layout (load)
    return Path("report") / Path(sweep_dir).resolve().name if stored else Path(sweep_dir) / "report"


def keep(sweep_dir, store):
    """Copy each ended run of a sweep into a folder of the results store (benchmarks/results/
    README.md), one folder a combination: meta.json; ended.json (ending(), with the run's own clock
    in wall_clock_s); evaluations.jsonl of the run the sweep continued; absolute.json, the best
    checkpoint's re-evaluation; log.txt's physics and sweep lines. No checkpoints, no states. A run
    kept before is replaced. -> the names copied"""
    copied = []
    for meta_path in sorted(Path(sweep_dir).glob("*/meta.json")):
        folder = meta_path.parent
        ended, run_dir = ending(folder), current_run(folder)
        if ended is None or run_dir is None:
            continue
        records = read_records(run_dir / EVAL_FILE)
        target = Path(store) / folder.name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy(meta_path, target / "meta.json")
        clock = records[-1].get("elapsed") if records else None
        ended = {k: v for k, v in ended.items() if k != "seconds"}  # the sweep's, not the run's
        write_json(
            {**ended, "wall_clock_s": None if clock is None else round(clock, 1)},
            str(target / ENDED),
        )
        write_records(records, str(target / EVAL_FILE))
        if (absolute := reevaluation(run_dir, folder)) is not None:
            write_json(absolute, str(target / ABSOLUTE))
        log = folder / "log.txt"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        said = [line for line in lines if line.startswith(("SMAClite physics", "sweep:"))]
        (target / "log.txt").write_text("".join(line + "\n" for line in said))
        copied.append(folder.name)
    return copied


def machines(runs):
    """The CPUs the runs ran on (their meta.json), with how many runs each."""
    found = {}
    for run in runs:
        cpu = run["meta"].get("machine") or {}
        name = f"{cpu.get('cpu', 'a CPU not recorded')} ({cpu.get('cores', '?')} cores)"
        found[name] = found.get(name, 0) + 1
    return "; ".join(f"{name}, {n} runs" for name, n in sorted(found.items()))


def spread(values, spec=".2f", unit=""):
    """A mean over seeds, as much as the seeds can say: one seed's value alone; 2-4 seeds
    'mean (range low to high)'; 5 or more 'mean [low, high] 95% CI' (percentile bootstrap, which
    over fewer seeds is only the range, or narrower). unit follows each number."""
    values = [float(v) for v in values]
    f = lambda v: f"{v:{spec}}{unit}"  # noqa: E731
    if len(values) == 1:
        return f(values[0])
    if len(values) < MIN_CI_SEEDS:
        return f"{f(np.mean(values))} (range {f(min(values))} to {f(max(values))})"
    mean, low, high = bootstrap_ci(values)
    return f"{f(mean)} [{f(low)}, {f(high)}] 95% CI"


def current_run(folder):
    """The run directory of a sweep's combination that the sweep continues (the newest: a run directory is only begun
    anew when no training state was saved, e.g. a run killed before its first), or None. Older ones are left out."""
    found = sorted(
        folder.glob(f"runs/*/{EVAL_FILE}")
    )  # as the sweep sorts them: names end with the unix time
    return found[-1].parent if found else None


def reevaluation(run_dir, folder):
    """The absolute metric's record of a run (its best checkpoint's --eval-only episodes), or None:
    the copy in its combination's folder (the store's, or the sweep's own, which a later --eval-only
    cannot rewrite), else, from a sweep that kept no copy, the file next to the checkpoint."""
    if (Path(folder) / ABSOLUTE).exists():
        return read_json(Path(folder) / ABSOLUTE)
    models = run_dir / MODELS_FILE
    best = models.exists() and json.loads(models.read_text()).get("best")
    found = best and run_dir / reevaluation_file(best["path"])
    return json.loads(found.read_text()) if found and found.exists() else None


def steps_to(run, metric, threshold, window):
    """The env step of the first evaluation at which the mean score over it and the window - 1 before it reaches
    threshold, or None."""
    values = scores(run, metric)
    for k in range(window - 1, len(values)):
        if (
            values[k - window + 1 : k + 1].mean() >= threshold - 1e-9
        ):  # 45 battles won of 50 is 0.9, however rounded
            return int(run["steps"][k])
    return None


def scores(run, metric):
    key = "battle_won" if metric == "battle_won" else "returns"
    return np.array([np.mean(r[key]) for r in run["records"]])


def bootstrap_ci(values, reps=REPS, seed=0):
    """Mean over the first axis (seeds) with its 95% percentile bootstrap CI: (mean, low, high), each [...]."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(reps, len(values)))
    means = values[idx].mean(1)
    return values.mean(0), np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def curves(runs, metric, x="steps", points=100):
    """env -> line -> (grid, mean, low, high): each seed's evaluations interpolated on a common grid up to the shortest."""
    out = defaultdict(dict)
    groups = defaultdict(list)
    for run in runs:
        groups[run["env"], run["line"]].append(run)
    for (env, line), members in groups.items():
        end = min(run[x][-1] for run in members)
        grid = np.linspace(min(run[x][0] for run in members), end, points)
        values = [np.interp(grid, run[x], scores(run, metric)) for run in members]
        if len(members) < MIN_CI_SEEDS:  # the range: a bootstrap over so few seeds is no interval
            interval = (np.mean(values, 0), np.min(values, 0), np.max(values, 0))
        else:
            interval = bootstrap_ci(values)
        out[env][line] = (grid, *interval, len(members))
    return out


def normalised_finals(runs, metric):
    """line -> [seeds, envs] final scores normalised per env by the lowest and highest final score on it (rliable's
    input); only seeds every env has for that line, so the matrix is full. A win rate is on [0, 1] already and is kept
    as it is (min-max would turn maps every run wins into 0s)."""
    finals = {(run["env"], run["line"], run["seed"]): scores(run, metric)[-1] for run in runs}
    envs = sorted({env for env, _, _ in finals})
    if metric == "battle_won":
        bounds = dict.fromkeys(envs, (0.0, 1.0))
    else:
        bounds = {env: (min(v for k, v in finals.items() if k[0] == env), max(v for k, v in finals.items() if k[0] == env))
                  for env in envs}  # fmt: skip
    out = {}
    for line in sorted({line for _, line, _ in finals}):
        seeds = sorted(
            set.intersection(
                *({s for e, ln, s in finals if e == env and ln == line} for env in envs)
            )
        )
        low_high = [bounds[env] for env in envs]
        out[line] = np.array([[(finals[env, line, s] - lo) / ((hi - lo) or 1.0) for env, (lo, hi) in zip(envs, low_high, strict=True)]
                              for s in seeds])  # fmt: skip
    return out, envs


def aggregate(score_dict, reps=REPS, seed=0):
    """IQM with stratified bootstrap 95% CIs (rliable) -> line -> (iqm, low, high)."""
    from rliable import library as rly
    from rliable import metrics

    state, _ = (
        np.random.RandomState(seed),
        np.random.seed(seed),
    )  # rliable's StratifiedBootstrap draws from numpy's
    iqm = lambda x: np.array([metrics.aggregate_iqm(x)])  # noqa: E731  global generator, whatever random_state says
    points, intervals = rly.get_interval_estimates(score_dict, iqm, reps=reps, random_state=state)
    return {
        k: (float(points[k][0]), float(intervals[k][0, 0]), float(intervals[k][1, 0]))
        for k in score_dict
    }


def improvement(score_dict, reps=REPS, seed=0):
    """P(line X > line Y) for every ordered pair, with 95% CIs (rliable) -> {(x, y): (p, low, high)}."""
    from rliable import library as rly
    from rliable import metrics

    lines = sorted(score_dict)
    pairs = {f"{x},{y}": (score_dict[x], score_dict[y]) for x in lines for y in lines if x != y}
    state, _ = (
        np.random.RandomState(seed),
        np.random.seed(seed),
    )  # numpy's global generator too: see aggregate()
    points, intervals = rly.get_interval_estimates(
        pairs, metrics.probability_of_improvement, reps=reps, random_state=state
    )
    return {
        tuple(k.split(",")): tuple(float(np.ravel(v)[0]) for v in (points[k], *intervals[k]))
        for k in pairs
    }


def marl_eval(runs, metric):
    """marl-eval's JSON layout: {env family: {task: {algorithm: {run_i: {step_k: {step_count, return}, absolute_metrics}}}}}
    (absolute_metrics: the best checkpoint's re-evaluation where the sweep ran it with --absolute, else the last
    evaluation's episodes)."""
    from cleanmarl.env import resolve_env_type

    key = "win_rate" if metric == "battle_won" else "return"
    out = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for run in runs:
        family, per_run = resolve_env_type(run["env"]), {}
        for k, record in enumerate(run["records"]):
            values = record["battle_won"] if metric == "battle_won" else record["returns"]
            per_run[f"step_{k}"] = {"step_count": record["step"], key: values}
        last = run["absolute"] or run["records"][-1]  # the re-evaluation where the sweep ran it
        per_run["absolute_metrics"] = {
            key: last["battle_won"] if metric == "battle_won" else last["returns"]
        }
        out[family][run["env"]][run["line"]][f"run_{run['seed']}"] = per_run
    return json.loads(json.dumps(out))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cleanmarl.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("sweep_dir")
    parser.add_argument(
        "--out",
        help="report directory (default: SWEEP_DIR/report; ./report/NAME for a store folder)",
    )
    parser.add_argument("--metric", choices=["return", "battle_won"], default="return")
    parser.add_argument(
        "--threshold", type=float, help="add the env steps each run took to reach this score"
    )
    parser.add_argument(
        "--window", type=int, default=10, help="evaluations averaged by --threshold"
    )
    parser.add_argument(
        "--keep",
        metavar="STORE",
        help="copy the sweep's ended runs' records into STORE (benchmarks/results/NAME) and stop",
    )
    args = parser.parse_args(argv)
    if args.keep:
        copied = keep(args.sweep_dir, args.keep)
        print(f"report: kept {len(copied)} ended runs' records in {args.keep}")
        return 0
    runs = load(args.sweep_dir)
    if not runs:
        sys.exit(
            f"report: error: no evaluation records ({EVAL_FILE}) under {args.sweep_dir}/*/runs/"
        )
    out = Path(args.out) if args.out else report_dir(args.sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    md = [
        f"# Report: {args.sweep_dir}",
        "",
        f"{len(runs)} runs; metric: greedy evaluation {args.metric}.",
        "",
    ]
    for x, label in (("steps", "env steps"), ("times", "wall time (s)")):
        for env, lines in curves(runs, args.metric, x).items():
            fig, ax = plt.subplots(figsize=(6, 4))
            for line, (grid, mean, low, high, n) in sorted(lines.items()):
                shade = "95% CI" if n >= MIN_CI_SEEDS else "range"
                ax.plot(grid, mean, label=f"{line}: mean of {n} seeds, shaded: {shade}")
                ax.fill_between(grid, low, high, alpha=0.2)
            ax.set(xlabel=label, ylabel=f"greedy evaluation {args.metric}", title=env)
            ax.legend(fontsize=8)
            name = f"curve_{'steps' if x == 'steps' else 'time'}_{env.replace(':', '_')}.png"
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            md += [f"![{env} vs {label}]({name})", ""]
    rows, md_rows = [], []
    groups = defaultdict(list)
    for run in runs:
        groups[run["env"], run["line"]].append(run)
    for (env, line), members in sorted(groups.items()):
        row, cells = table_row(members, args.metric, args.threshold, args.window)
        rows.append(dict(env=env, line=line, **row))
        md_rows.append(f"| {env} | {line} | " + " | ".join(cells) + " |")
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    to = "" if args.threshold is None else f" steps to {args.threshold:g} (k/n) |"
    md += [
        "Each cell: the mean over seeds, then its spread: the range over 2-4 seeds, a 95% bootstrap"
        " CI from 5. Final: the last evaluation of the runs that ran their full length (a run"
        " stopped by --stop-at is listed apart, with its step); absolute: the best checkpoint"
        " re-evaluated (--absolute).",
        "",
        "| env | script and flags | seeds | final | per seed | best | absolute |"
        f"{to} env steps | wall time | steps/s |",
        "|---" * (10 + (args.threshold is not None)) + "|",
        *md_rows,
    ]
    score_dict, envs = normalised_finals(runs, args.metric)
    if len(score_dict) > 1 and all(len(v) for v in score_dict.values()):
        iqm = aggregate(score_dict)
        md += ["", f"Aggregate over {', '.join(envs)} (final scores normalised per env to [0, 1]):", "",
               "| script and flags | IQM (95% stratified bootstrap CI) |", "|---|---|"]  # fmt: skip
        md += [
            f"| {line} | {p:.3f} ({lo:.3f}, {hi:.3f}) |"
            for line, (p, lo, hi) in sorted(iqm.items())
        ]
        md += ["", "| P(X > Y) | X | Y |", "|---|---|---|"]
        md += [
            f"| {p:.2f} ({lo:.2f}, {hi:.2f}) | {x} | {y} |"
            for (x, y), (p, lo, hi) in improvement(score_dict).items()
        ]
        thresholds = np.linspace(0.0, 1.0, 81)
        profiles, cis = rly_profiles(score_dict, thresholds)
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_utils.plot_performance_profiles(profiles, thresholds, performance_profile_cis=cis, ax=ax,
                                             xlabel=r"normalised score $\tau$")  # fmt: skip
        ax.legend(list(profiles), fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "performance_profiles.png", dpi=100)
        plt.close(fig)
        md += ["", "![performance profiles](performance_profiles.png)"]
    (out / "marl_eval.json").write_text(json.dumps(marl_eval(runs, args.metric)))
    (out / "report.md").write_text("\n".join(md) + "\n")
    print(f"report: {out / 'report.md'} ({len(runs)} runs)")
    return 0


def key(metric):
    return "battle_won" if metric == "battle_won" else "returns"


def table_row(members, metric, threshold=None, window=10):
    """One env and line's runs -> (the CSV's row, the table's cells). Final scores are the runs'
    that ran their full length (ended "completed") only: a run stopped by --stop-at ends on a window
    that just crossed its threshold, so it is shown apart ("stopped at S"), never averaged in."""
    ended = lambda r: (r["ended"] or {}).get("ended", "under way")  # noqa: E731
    full = [r for r in members if ended(r) == "completed"]
    finals = [scores(r, metric)[-1] for r in full]
    best = [scores(r, metric).max() for r in members]
    absolute = [np.mean(a[key(metric)]) for r in members if (a := r["absolute"])]
    per_seed = [
        f"{r['seed']}: {scores(r, metric)[-1]:.3g}"
        if ended(r) == "completed"
        else f"{r['seed']}: {ended(r)} at {int(r['steps'][-1]):,}"
        for r in sorted(members, key=lambda r: r["seed"])
    ]
    steps = np.mean([r["steps"][-1] for r in members])
    wall = np.mean([r["wall"] for r in members])
    row = dict(
        seeds=len(members),
        completed=len(full),
        final=mean_or_nan(finals),
        per_seed="; ".join(per_seed),
        best=mean_or_nan(best),
        absolute=mean_or_nan(absolute),
        env_steps=steps,
        wall_time_s=wall,
        steps_per_s=steps / wall if wall else float("nan"),
    )
    cells = [str(len(members)), cell(finals), "; ".join(per_seed), cell(best), cell(absolute)]
    if threshold is not None:
        to = [s for r in members if (s := steps_to(r, metric, threshold, window)) is not None]
        row |= dict(steps_to=mean_or_nan(to), reached=len(to))
        cells.append(f"{cell(to, ',.0f')} ({len(to)}/{len(members)})")
    cells += [f"{steps:,.0f}", f"{wall / 60:.1f} min", f"{row['steps_per_s']:,.0f}"]
    return row, cells


def mean_or_nan(values):
    return float(np.mean(values)) if len(values) else float("nan")


def cell(values, spec=".3g"):
    """A table cell: spread(values), or - where there are none."""
    return spread(values, spec) if len(values) else "-"


def rly_profiles(score_dict, thresholds, reps=REPS, seed=0):
    """Performance profiles (the fraction of runs above each normalised score) with 95% CIs: rliable's
    create_performance_profile, through get_interval_estimates, seeded as aggregate() is."""
    from rliable import library as rly

    state, _ = np.random.RandomState(seed), np.random.seed(seed)
    profile = lambda scores: rly.score_distributions(scores, thresholds)  # noqa: E731
    return rly.get_interval_estimates(score_dict, profile, reps=reps, random_state=state)


if __name__ == "__main__":
    sys.exit(main())
