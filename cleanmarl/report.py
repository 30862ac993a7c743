"""The report of a sweep (docs/benchmarks.md): curves with bootstrap CIs over seeds, an aggregate
over envs with rliable, a table, and marl-eval's JSON layout, from each run's evaluation records
(evaluations.jsonl).

    python -m cleanmarl.report sweeps/lambda              # writes sweeps/lambda/report/
    python -m cleanmarl.report sweeps/lambda --keep benchmarks/results/lambda   # the results store
    python -m cleanmarl.report benchmarks/results/lambda  # a store folder: writes ./report/lambda/

Per env: the greedy evaluation return (or battle_won, --metric) against env steps and against wall
time (the run's own clock, summed over its resumes), the mean over seeds shaded with the range over
2-4 seeds or a 95% percentile bootstrap CI over 5 or more (2000 resamples), one line per script and
flag set. Aggregate: each run's final score (its last evaluation's mean) normalised per env to
[0, 1] by the lowest and highest final score of any run on that env (a win rate is kept as it is),
then the interquartile mean (IQM) with stratified bootstrap CIs, the probability of improvement
between every two lines, and performance profiles (rliable: Agarwal et al., 2021), over the seeds
actually run. The table: per line the final evaluation of the runs that ran their full length (each
seed shown; a run stopped by --stop-at is listed apart, never averaged in) and the best evaluation,
each a mean over seeds with the range (2-4 seeds) or a 95% CI (5 or more), the absolute metric
where the sweep ran it (--absolute: the best checkpoint re-evaluated with 10x the episodes, Gorsane
et al., 2022), with --threshold X the env steps to X (the first evaluation at which the mean over it
and the --window - 1 before it reaches X; over the seeds that reached it, "k/n" saying how many
did), env steps, wall time (to the last evaluation), steps/s. A combination's run is its newest run
directory (the one the sweep continues).

Every combination folder is a run of the sweep: one that cannot be used (no records, a damaged
meta.json, evaluations.jsonl, ended.json, absolute.json or models.json) is named with what is wrong,
one line each, and the report refuses to leave it out unless told (--allow-missing: then each line
says "n of N seeds" where a seed is missing).
"""

import argparse
import csv
import json
import math
import re
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cleanmarl.utils.layout import (
    ABSOLUTE_FILE,
    EVAL_FILE,
    MODELS_FILE,
    is_number,
    read_records,
    reevaluation_file,
    write_json,
    write_records,
)

REPS = 2000
MIN_CI_SEEDS = 5  # fewer seeds get a range, not an interval
ENDED, ABSOLUTE = "ended.json", ABSOLUTE_FILE  # the results store's (keep)
ENDINGS = ("completed", "stopped", "failed")
COMBINATION = re.compile(r".+__.+__.+__\d+")  # <script>__<env>__<flag set>__<seed>, as sweep names
MAX_STEP = 2**53  # env steps stay exact as float64 (np.interp)
DUPLICATES = (
    "A step recorded twice (a resumed run writes its evaluations again from its saved state): the"
    " last record of each step is kept, with one warning line naming the file."
)


class Unusable(ValueError):
    """A run the report cannot use; the message names the file (and line) and what is wrong."""


def load(sweep_dir):
    """Every usable run of a sweep, or of a folder of the results store (keep) -> list of dicts:
    env, line (script and flag set), seed, steps, times, records, wall time, absolute (the
    re-evaluation), ended (how the run ended: ending), folder (the combination's), meta (its
    meta.json). Each run it cannot use is named in a warning line on stderr (survey)."""
    runs, missing = survey(sweep_dir)
    for found in missing:
        print(one_line(f"report: warning: {found['why']} (left out)"), file=sys.stderr)
    return runs


def survey(sweep_dir):
    """The combination folders of a sweep or a store folder -> (runs: load's dicts, the usable
    ones; missing: [{folder, key: (env, line), why: the error line}], the others)."""
    runs, missing = [], []
    for folder in combinations(sweep_dir):
        key = None
        try:
            meta = read_meta(folder)
            key = (meta["env"], line_name(meta))
            runs.append(read_run(folder, meta))
        except Unusable as e:
            missing.append(dict(folder=folder, key=key, why=str(e)))
    # a folder whose meta.json cannot be read counts for the line its name shares with the others
    named = {prefix(r["folder"]): (r["env"], r["line"]) for r in runs}
    named |= {prefix(m["folder"]): m["key"] for m in missing if m["key"]}
    for found in missing:
        found["key"] = found["key"] or named.get(prefix(found["folder"])) or guess(found["folder"])
    return runs, missing


def combinations(sweep_dir):
    """The folders of sweep_dir that hold a run: those with a meta.json, and those named as the
    sweep names a combination (one stopped before it began has none)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return []
    found = (
        p for p in root.iterdir() if (p / "meta.json").exists() or COMBINATION.fullmatch(p.name)
    )
    return sorted(p for p in found if p.is_dir())


def prefix(folder):
    """A combination folder's name less its seed: the same for every seed of a line."""
    return folder.name.rsplit("__", 1)[0] if COMBINATION.fullmatch(folder.name) else folder.name


def guess(folder):
    """(env, line) of a folder read from its name alone."""
    parts = folder.name.split("__")
    return (parts[1], f"{parts[0]} [{parts[2]}]") if len(parts) >= 4 else ("?", folder.name)


def line_name(meta):
    flags = meta["flag_set"].strip()
    return meta["script"].removesuffix(".py") + (f" {flags}" if flags else "")


def read_run(folder, meta):
    """One combination's run (load's dict), or Unusable."""
    stored = (folder / EVAL_FILE).exists()  # the store's layout: one folder a run
    run_dir = folder if stored else current_run(folder)
    ended = ending(folder)
    if run_dir is None:
        raise Unusable(f"{folder}: no {EVAL_FILE} ({why_none(ended)})")
    records = read_evaluations(run_dir / EVAL_FILE)
    if all("elapsed" in r for r in records):  # the run's own clock, summed over its resumes
        times = np.array([r["elapsed"] for r in records], dtype=float)
    else:  # records written before the clock: the calendar from the first evaluation on
        times = np.array([r["time"] - records[0]["time"] for r in records], dtype=float)
    absolute = reevaluation(run_dir, folder)
    steps = np.array([r["step"] for r in records])
    return dict(
        env=meta["env"],
        line=line_name(meta),
        seed=meta["seed"],
        records=records,
        wall=float(times[-1]),
        absolute=absolute,
        steps=steps,
        times=times,
        ended=ended,
        folder=folder,
        meta=meta,
    )


def why_none(ended):
    """Why a combination has no records, from how it ended."""
    if ended is None:
        return "under way, or stopped before its first evaluation"
    if ended["ended"] != "failed":
        return f"it ended {ended['ended']} without one"
    code = ended.get("exit")
    said = ended.get("last_line")
    return (
        "the run failed"
        + (f" (exit {code})" if is_int(code) else "")
        + (f": {said[:200]}" if isinstance(said, str) else "")
    )


def shown(value):
    """A value as an error line shows it, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def one_line(text):
    """text with its control characters escaped: an error line stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def field(found, name, ok, what, where):
    """found[name] where ok(it), else Unusable naming where, the field and its value."""
    if name not in found:
        raise Unusable(f"{where}: no {name}")
    if not ok(found[name]):
        raise Unusable(f"{where}: {name} is {shown(found[name])}, not {what}")
    return found[name]


def read_json_file(path):
    """The JSON value in path, or Unusable naming it and what is wrong."""
    try:
        return json.loads(Path(path).read_bytes().decode())
    except UnicodeDecodeError as e:
        raise Unusable(f"{path}: not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise Unusable(f"{path}: not JSON (line {e.lineno}, column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # an int of over 4300 digits; nesting too deep
        raise Unusable(f"{path}: not JSON ({type(e).__name__})") from None
    except OSError as e:
        raise Unusable(f"{path}: cannot be read ({e.strerror or e})") from None


def read_object(path):
    found = read_json_file(path)
    if not isinstance(found, dict):
        raise Unusable(f"{path}: not a JSON object")
    return found


def read_meta(folder):
    """A combination's meta.json with the fields the report reads checked, or Unusable."""
    path = folder / "meta.json"
    if not path.exists():
        raise Unusable(f"{path}: missing (a combination never started, or its file deleted)")
    meta = read_object(path)
    for name in ("script", "env"):
        field(meta, name, lambda v: isinstance(v, str) and v.strip(), "a name", path)
    field(meta, "flag_set", lambda v: isinstance(v, str), "a string of flags", path)
    field(meta, "seed", lambda v: is_int(v) and v >= 0, "an integer >= 0", path)
    return meta


EPISODES = (  # the per-episode lists of an evaluation, what each holds
    ("returns", is_number, "a list of finite numbers"),
    ("lengths", lambda v: is_int(v) and v >= 0, "a list of integers >= 0"),
    ("battle_won", is_number, "a list of finite numbers"),
)


def check_episodes(found, where, required):
    """Unusable unless each episode list in found (required: those that must be there) is a
    non-empty list of what it holds, all of one length."""
    counts = set()
    for name, ok, what in EPISODES:
        if name in found or name in required:
            whole = lambda v, ok=ok: isinstance(v, list) and v and all(map(ok, v))  # noqa: E731
            counts.add(len(field(found, name, whole, what, where)))
    if len(counts) > 1:
        raise Unusable(f"{where}: its episode lists differ in length ({sorted(counts)})")


def read_evaluations(path):
    """A run's evaluation records, each checked, by step, one a step (DUPLICATES), or Unusable
    naming the file and line. A partial last line is left out with a warning (read_records)."""
    try:
        records = read_records(path, check=False)  # checked below, each field named
    except UnicodeDecodeError as e:
        raise Unusable(f"{path}: not UTF-8 (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # "PATH: line N is not JSON", or json.loads' own
        said = str(e) or type(e).__name__
        raise Unusable(said if said.startswith(str(path)) else f"{path}: {said}") from None
    except OSError as e:
        raise Unusable(f"{path}: cannot be read ({e.strerror or e})") from None
    if not records:
        raise Unusable(f"{path}: empty (no evaluation record)")
    for number, record in enumerate(records, 1):  # read_records keeps every line but a cut last
        where = f"{path}: line {number}"
        if not isinstance(record, dict):
            raise Unusable(f"{where}: not a JSON object")
        field(record, "step", lambda v: is_int(v) and 0 <= v <= MAX_STEP, "an integer >= 0", where)
        check_episodes(record, where, ("returns", "lengths"))
        for name in ("elapsed", "time"):
            if name in record:
                field(record, name, is_number, "a number", where)
    if not all("elapsed" in r or "time" in r for r in records):
        number = next(k for k, r in enumerate(records, 1) if "elapsed" not in r and "time" not in r)
        raise Unusable(f"{path}: line {number}: no elapsed and no time")
    if not all("elapsed" in r for r in records) and not all("time" in r for r in records):
        raise Unusable(f"{path}: some records have only elapsed, others only time")
    if len({"battle_won" in r for r in records}) > 1:
        number = next(k for k, r in enumerate(records, 1) if "battle_won" not in r)
        raise Unusable(f"{path}: line {number}: no battle_won, which other records have")
    last = {r["step"]: r for r in records}
    if len(last) < len(records):
        twice = sorted(s for s, n in Counter(r["step"] for r in records).items() if n > 1)
        steps = ", ".join(map(str, twice[:3])) + (", ..." if len(twice) > 3 else "")
        print(
            one_line(
                f"report: warning: {path}: {len(twice)} step(s) recorded more than once ({steps}):"
                " the last record of each kept"
            ),
            file=sys.stderr,
        )
    return [last[step] for step in sorted(last)]


def ending(folder):
    """How the run in a sweep's or the store's folder ended: {"ended": "completed" | "stopped" |
    "failed", "step", ["by"] (the --stop-at rule), ...}, or None while it is under way; Unusable
    where the file is damaged."""
    for name in (ENDED, "done", "failed"):
        path = Path(folder) / name
        if not path.exists():
            continue
        found = read_json_file(path)
        if name == "done" and is_number(found):  # an older sweep's `done` holds its seconds alone
            return {"ended": "completed"}
        if not isinstance(found, dict):
            raise Unusable(f"{path}: not a JSON object")
        field(found, "ended", lambda v: v in ENDINGS, " or ".join(ENDINGS), path)
        return found
    return None


def report_dir(sweep_dir):
    """Where the report goes by default: SWEEP_DIR/report for a sweep; ./report/NAME for a folder
    of the results store, whose records are committed and never share a folder with output."""
    metas = Path(sweep_dir).glob("*/meta.json")
    stored = any((m.parent / EVAL_FILE).exists() for m in metas)  # the store's layout (load)
    return Path("report") / Path(sweep_dir).resolve().name if stored else Path(sweep_dir) / "report"


def keep(sweep_dir, store, unusable=None):
    """Copy each ended run of a sweep into a folder of the results store (benchmarks/results/
    README.md), one folder a combination: meta.json; ended.json (ending(), with the run's own clock
    in wall_clock_s); evaluations.jsonl of the run the sweep continued (checked, one a step);
    absolute.json, the best checkpoint's re-evaluation; log.txt's physics and sweep lines. No
    checkpoints, no states. A run kept before is replaced. A run that cannot be read is not kept:
    its error line goes to unusable (a list), else to stderr as a warning. -> the names copied"""
    copied = []
    for meta_path in sorted(Path(sweep_dir).glob("*/meta.json")):
        folder = meta_path.parent
        try:
            read_meta(folder)
            ended, run_dir = ending(folder), current_run(folder)
            if ended is None or run_dir is None:
                continue
            records = read_evaluations(run_dir / EVAL_FILE)
            absolute = reevaluation(run_dir, folder)
        except Unusable as e:
            if unusable is None:
                print(one_line(f"report: warning: {e} (not kept)"), file=sys.stderr)
            else:
                unusable.append(str(e))
            continue
        target = Path(store) / folder.name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy(meta_path, target / "meta.json")
        clock = records[-1].get("elapsed")
        ended = {k: v for k, v in ended.items() if k != "seconds"}  # the sweep's, not the run's
        write_json(
            {**ended, "wall_clock_s": None if clock is None else round(clock, 1)},
            str(target / ENDED),
        )
        write_records(records, str(target / EVAL_FILE))
        if absolute is not None:
            write_json(absolute, str(target / ABSOLUTE))
        log = folder / "log.txt"
        lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
        said = [line for line in lines if line.startswith(("SMAClite physics", "sweep:"))]
        (target / "log.txt").write_text("".join(line + "\n" for line in said))
        copied.append(folder.name)
    return copied


def machines(runs):
    """The CPUs the runs ran on (their meta.json), with how many runs each."""
    found = {}
    for run in runs:
        cpu = run["meta"].get("machine")
        cpu = cpu if isinstance(cpu, dict) else {}
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
    cannot rewrite), else, from a sweep that kept no copy, the file next to the checkpoint.
    Unusable where a file is damaged."""
    path = Path(folder) / ABSOLUTE
    if not path.exists():
        path = best_reevaluation(run_dir)
    if path is None:
        return None
    found = read_object(path)
    if "returns" not in found and "battle_won" not in found:
        raise Unusable(f"{path}: no returns and no battle_won")
    check_episodes(found, path, ())
    return found


def best_reevaluation(run_dir):
    """The re-evaluation file of the best checkpoint that run_dir's models.json names, or None."""
    models = run_dir / MODELS_FILE
    if not models.exists():
        return None
    best = read_object(models).get("best")
    if best is None:
        return None
    if not isinstance(best, dict) or not isinstance(best.get("path"), str):
        raise Unusable(f"{models}: best is {shown(best)}, not {{path, step, ...}}")
    path = run_dir / reevaluation_file(best["path"])
    if not path.resolve().is_relative_to(run_dir.resolve()):
        raise Unusable(f"{models}: best's path {shown(best['path'])} leaves the run directory")
    return path if path.exists() else None


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
    """marl-eval's JSON layout: {env family: {task: {algorithm: {run_i: {step_k: {step_count,
    return}, absolute_metrics}}}}} (absolute_metrics: the best checkpoint's re-evaluation where the
    sweep ran it with --absolute, else the last evaluation's episodes; family "other" for an env
    that no family claims)."""
    from cleanmarl.env import EnvError, resolve_env_type

    name = "win_rate" if metric == "battle_won" else "return"
    out = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for run in runs:
        try:
            family, per_run = resolve_env_type(run["env"]), {}
        except EnvError:  # an env no family claims (a custom one): its name stands alone
            family, per_run = "other", {}
        for k, record in enumerate(run["records"]):
            per_run[f"step_{k}"] = {"step_count": record["step"], name: record[key(metric)]}
        # the re-evaluation where the sweep ran it (and it holds the metric)
        last = absolute if (absolute := run["absolute"]) and key(metric) in absolute else None
        last = last or run["records"][-1]
        per_run["absolute_metrics"] = {name: last[key(metric)]}
        out[family][run["env"]][run["line"]][f"run_{run['seed']}"] = per_run
    return json.loads(json.dumps(out))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cleanmarl.report",
        description=__doc__.splitlines()[0],
        epilog=DUPLICATES,
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
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="report the usable runs when some cannot be used (each named on stderr; the table"
        " says 'n of N' seeds), instead of refusing with exit status 1; with --keep, keep the"
        " others and exit 0",
    )
    args = parser.parse_args(argv)
    if args.window < 1:
        sys.exit(f"report: error: --window {args.window}: must be 1 or more")
    if args.threshold is not None and not math.isfinite(args.threshold):
        sys.exit(f"report: error: --threshold {args.threshold}: must be a finite number")
    if not Path(args.sweep_dir).is_dir():
        sys.exit(one_line(f"report: error: {args.sweep_dir}: not a directory"))
    if args.keep:
        return main_keep(args)
    runs, missing = survey(args.sweep_dir)
    if args.metric == "battle_won":  # a run whose env reports no battles has no win rate
        missing += [
            dict(folder=r["folder"], key=(r["env"], r["line"]), why=f"{r['folder']}: no battle_won")
            for r in runs
            if "battle_won" not in r["records"][0]
        ]
        runs = [r for r in runs if "battle_won" in r["records"][0]]
    if not runs and not missing:
        sys.exit(
            f"report: error: no evaluation records ({EVAL_FILE}) under {args.sweep_dir}/*/runs/"
        )
    said = "warning" if args.allow_missing else "error"
    for found in missing:
        print(one_line(f"report: {said}: {found['why']}"), file=sys.stderr)
    total = len(runs) + len(missing)
    if missing and not args.allow_missing:
        sys.exit(
            f"report: error: {len(missing)} of the sweep's {total} runs cannot be used (named"
            f" above): nothing written; --allow-missing reports the {len(runs)} others"
        )
    if not runs:
        sys.exit(f"report: error: none of the sweep's {total} runs can be used (named above)")
    out = Path(args.out) if args.out else report_dir(args.sweep_dir)
    try:
        write_report(runs, missing, args, out)
    except OSError as e:
        where = e.filename or out
        sys.exit(one_line(f"report: error: cannot write {where}: {e.strerror or e}"))
    of = f"{len(runs)} of {total} runs: {len(missing)} left out" if missing else f"{len(runs)} runs"
    print(f"report: {out / 'report.md'} ({of})")
    return 0


def main_keep(args):
    """--keep: copy the ended runs into the store; exit status 1 where one could not be read
    (unless --allow-missing) or the store cannot be written."""
    unusable = []
    try:
        copied = keep(args.sweep_dir, args.keep, unusable)
    except OSError as e:
        where = e.filename or args.keep
        sys.exit(one_line(f"report: error: cannot write {where}: {e.strerror or e}"))
    said = "warning" if args.allow_missing else "error"
    for why in unusable:
        print(one_line(f"report: {said}: {why} (not kept)"), file=sys.stderr)
    print(f"report: kept {len(copied)} ended runs' records in {args.keep}")
    if unusable and not args.allow_missing:
        sys.exit(f"report: error: {len(unusable)} ended runs not kept (named above)")
    return 0


def file_part(text):
    """text made part of one file name (an env's, from meta.json): no separator, so the file
    stays in its folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def write_report(runs, missing, args, out):
    """Write the report of the usable runs into out: figures, table.csv, report.md (which names
    the runs left out), marl_eval.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    out.mkdir(parents=True, exist_ok=True)
    ran = Counter((r["env"], r["line"]) for r in runs) + Counter(m["key"] for m in missing)

    def of(n, env, line):
        return f"{n} of {ran[env, line]}" if n < ran[env, line] else str(n)

    total = len(runs) + len(missing)
    md = [
        f"# Report: {args.sweep_dir}",
        "",
        (f"{len(runs)} of {total} runs" if missing else f"{len(runs)} runs")
        + f"; metric: greedy evaluation {args.metric}.",
        "",
    ]
    if missing:
        md += ["Left out (they cannot be used):", ""]
        md += [f"- {one_line(m['why'])}" for m in missing] + [""]
    for x, label in (("steps", "env steps"), ("times", "wall time (s)")):
        for env, lines in curves(runs, args.metric, x).items():
            fig, ax = plt.subplots(figsize=(6, 4))
            for line, (grid, mean, low, high, n) in sorted(lines.items()):
                shade = "95% CI" if n >= MIN_CI_SEEDS else "range"
                ax.plot(
                    grid, mean, label=f"{line}: mean of {of(n, env, line)} seeds, shaded: {shade}"
                )
                ax.fill_between(grid, low, high, alpha=0.2)
            ax.set(xlabel=label, ylabel=f"greedy evaluation {args.metric}", title=env)
            ax.legend(fontsize=8)
            name = f"curve_{'steps' if x == 'steps' else 'time'}_{file_part(env)}.png"
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            md += [f"![{env} vs {label}]({name})", ""]
    rows, md_rows = [], []
    groups = defaultdict(list)
    for run in runs:
        groups[run["env"], run["line"]].append(run)
    for env, line in sorted(ran):
        members = groups.get((env, line), [])
        row, cells = table_row(members, args.metric, args.threshold, args.window, ran[env, line])
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
        " re-evaluated (--absolute). Seeds: n of N where the sweep ran N and n could be used.",
        "",
        "| env | script and flags | seeds | final | per seed | best | absolute |"
        f"{to} env steps | wall time | steps/s |",
        "|---" * (10 + (args.threshold is not None)) + "|",
        *md_rows,
    ]
    score_dict, envs = normalised_finals(runs, args.metric)
    if len(score_dict) > 1 and all(len(v) for v in score_dict.values()):
        iqm = aggregate(score_dict)
        md += [
            "",
            f"Aggregate over {', '.join(envs)} (final scores normalised per env to [0, 1]):",
            "",
            "| script and flags | IQM (95% stratified bootstrap CI) |",
            "|---|---|",
        ]
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
        plot_utils.plot_performance_profiles(
            profiles,
            thresholds,
            performance_profile_cis=cis,
            ax=ax,
            xlabel=r"normalised score $\tau$",
        )
        ax.legend(list(profiles), fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "performance_profiles.png", dpi=100)
        plt.close(fig)
        md += ["", "![performance profiles](performance_profiles.png)"]
    (out / "marl_eval.json").write_text(json.dumps(marl_eval(runs, args.metric)))
    (out / "report.md").write_text("\n".join(md) + "\n")


def key(metric):
    return "battle_won" if metric == "battle_won" else "returns"


def table_row(members, metric, threshold=None, window=10, ran=None):
    """One env and line's usable runs (of `ran`, the runs the sweep ran of it: "n of N" seeds where
    some are missing) -> (the CSV's row, the table's cells). Final scores are the runs' that ran
    their full length (ended "completed") only: a run stopped by --stop-at ends on a window that
    just crossed its threshold, so it is shown apart ("stopped at S"), never averaged in."""
    ran = max(ran or 0, len(members))
    seeds = f"{len(members)} of {ran}" if len(members) < ran else str(len(members))
    if not members:
        row = dict(seeds=0, missing=ran, completed=0, per_seed="")
        row |= dict.fromkeys(["final", "best", "absolute"], float("nan"))
        row |= dict.fromkeys(["env_steps", "wall_time_s", "steps_per_s"], float("nan"))
        if threshold is not None:
            row |= dict(steps_to=float("nan"), reached=0)
        return row, [seeds] + ["-"] * (7 + (threshold is not None))
    ended = lambda r: (r["ended"] or {}).get("ended", "under way")  # noqa: E731
    full = [r for r in members if ended(r) == "completed"]
    finals = [scores(r, metric)[-1] for r in full]
    best = [scores(r, metric).max() for r in members]
    absolute = [
        np.mean(a[key(metric)]) for r in members if key(metric) in (a := r["absolute"] or {})
    ]
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
        missing=ran - len(members),
        completed=len(full),
        final=mean_or_nan(finals),
        per_seed="; ".join(per_seed),
        best=mean_or_nan(best),
        absolute=mean_or_nan(absolute),
        env_steps=steps,
        wall_time_s=wall,
        steps_per_s=steps / wall if wall else float("nan"),
    )
    cells = [seeds, cell(finals), "; ".join(per_seed), cell(best), cell(absolute)]
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
