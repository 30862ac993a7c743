"""Every results table and figure of the docs and the README, redrawn from the results store.

    python benchmarks/redraw.py            # writes them where the docs and the README read them
    python benchmarks/redraw.py --check    # exits 1 naming the first table that differs

The store (benchmarks/results/, its README) holds the records of every documented run: meta, how it
ended, its evaluations, its best checkpoint's re-evaluation. Each entry of RESULTS draws one folder
of it into docs/img/<name>/ (table.md, which the docs include, and curves.png); the home page's and
the README's results table (docs/img/results.md, and the README between its two RESULTS markers)
sum them up. --check draws everything into a temporary folder and compares: tables exactly, figures
by existence and size in pixels (matplotlib's pixels may differ across versions). CI runs it.
"""

import argparse
import contextlib
import io
import json
import re
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import smaclite_maps  # noqa: E402

from cleanmarl import report  # noqa: E402

WINDOW = 10  # a run's final score: the mean of its last 10 evaluations
MARKERS = ("<!-- RESULTS: drawn by benchmarks/redraw.py -->", "<!-- /RESULTS -->")


@dataclass
class Result:
    """One folder of the store and how its table and figure are drawn."""

    store: str  # under benchmarks/results/
    page: str  # the docs page that shows it, for the summary's links
    threshold: float | None = None  # steps to this score (10 evaluations in a row), where given
    kind: str = "scores"  # "scores" (draw_scores), "smaclite" (smaclite_maps.py), "clock", ...
    home: bool = True  # its rows in the home page's and the README's table
    aggregate: bool = False  # an rliable IQM over its envs, per line, under its table


RESULTS = {
    "smaclite": Result("smaclite", "smaclite.md", kind="smaclite"),
    "lbf": Result("lbf", "qmix.md#lbf", threshold=0.9),
    "mpe": Result("mpe", "qmix.md#mpe"),
    "multienvs": Result("multienvs", "qmix_multienvs.md#lbf", threshold=0.9),
    "memorycue": Result("memorycue", "qmix_lstm.md#memorycue", threshold=1.0, home=False),
    "lbf2s": Result("lbf2s", "qmix_lstm.md#lbf-2s", threshold=0.9, home=False),
    "ablation_3m": Result("ablation_3m", "design.md#last-action", threshold=0.9, home=False),
    "lbf_mpe": Result("lbf_mpe", "benchmarks.md#lbf-mpe", home=False, aggregate=True),
    "throughput": Result("throughput", "benchmarks.md#throughput", kind="throughput", home=False),
    "variants": Result("variants", "qmix_lstm.md#speed", kind="variants", home=False),
    "scaling": Result("scaling", "qmix_multienvs.md#speed", kind="scaling", home=False),
    "host16": Result("host16", "qmix_multienvs.md#16-cores", kind="host16", home=False),
    "multienvs_smaclite": Result(
        "multienvs_smaclite", "qmix_multienvs.md#smaclite", kind="clock", home=False
    ),
    "tables": Result("tables", "benchmarks.md", kind="tables", home=False),
}


def final(run):
    """A run's final score: the mean of its last WINDOW evaluations (win rate or return)."""
    metric = "battle_won" if "battle_won" in run["records"][0] else "return"
    return float(report.scores(run, metric)[-WINDOW:].mean())


def groups(runs):
    """(env, line) -> its runs by seed, in the order first seen."""
    out = {}
    for run in runs:
        out.setdefault((run["env"], run["line"]), []).append(run)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def metric(run):
    """A run's score: the win rate where the env reports battles, else the return."""
    return "battle_won" if "battle_won" in run["records"][0] else "return"


def draw_scores(result, runs, out, colours):
    """table.md: per env and line, each seed's final score (a run stopped by --stop-at shown as
    such) and step to the threshold; curves.png: each seed's greedy evaluation score against env
    steps. -> the summary's rows (the runs that ran their full length)"""
    absolute = any(r["absolute"] for r in runs)  # the sweep's --absolute: each best checkpoint
    # a result whose every run stopped at the threshold has no final scores: no columns for them
    finals_shown = any(smaclite_maps.how_ended(r) == "completed" for r in runs)
    lines = [
        "| task | script and flags | seeds | "
        + ("final score, per seed | mean | " if finals_shown else "")
        + (
            f"10 evaluations in a row average {result.threshold:g} at, per seed (k/n) | "
            if result.threshold
            else ""
        )
        + ("best checkpoint re-evaluated, per seed | " if absolute else "")
        + "env steps | wall time per run |",
        "|---" * (5 + 2 * finals_shown + bool(result.threshold) + absolute) + "|",
    ]
    summary = []
    for (env, line), members in groups(runs).items():
        done = [r for r in members if smaclite_maps.finished(r)]
        full = [r for r in done if smaclite_maps.how_ended(r) == "completed"]
        finals = [final(r) for r in full]
        spec = ".2f" if metric(done[0]) == "battle_won" else ".3f"
        per_seed = " / ".join(
            f"{final(r):{spec}}"
            if r in full
            else f"stopped at {smaclite_maps.thousands(r['steps'][-1])}"
            for r in done
        )
        cells = [f"`{env}`", f"`{line}`", " / ".join(str(r["seed"]) for r in done)]
        cells += [per_seed, report.spread(finals, spec) if finals else "-"] * finals_shown
        if result.threshold:
            to = [report.steps_to(r, metric(r), result.threshold, WINDOW) for r in done]
            got = sum(s is not None for s in to)
            at = " / ".join("never" if s is None else smaclite_maps.thousands(s) for s in to)
            cells.append(f"{at} ({got}/{len(done)})")
        if absolute:
            key = "battle_won" if metric(done[0]) == "battle_won" else "returns"
            best = [np.mean(r["absolute"][key]) if r["absolute"] else None for r in done]
            cells.append(" / ".join("-" if b is None else f"{b:{spec}}" for b in best))
        ends = sorted(r["steps"][-1] for r in done)
        steps = list(dict.fromkeys(smaclite_maps.thousands(s) for s in ends))
        cells += [", ".join(steps), wall_times([r["wall"] for r in done])]
        lines.append("| " + " | ".join(cells) + " |")
        if full:
            walls = [r["wall"] / 60 for r in full]
            summary.append((env, line, [r["seed"] for r in full], finals, ", ".join(steps), walls))
    lines += [
        "",
        (
            f"Final score: the greedy return (or win rate) over a run's last {WINDOW} evaluations,"
            " of the runs that ran their full length."
            if finals_shown
            else f"Every run stopped once {WINDOW} evaluations in a row averaged"
            f" {result.threshold:g} (the sweep's --stop-at), at the step shown."
        )
        + (
            " Best checkpoint re-evaluated: the mean over 10x the evaluation's episodes of the"
            " checkpoint of each run's best evaluation (the sweep's --absolute 10)."
            if absolute
            else ""
        )
        + f" Each run on: {report.machines(runs)}.",
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot_scores(runs, out / "curves.png", result.threshold, colours)
    return summary


def draw_clock(runs, out, colours):
    """table.md: a table per map, a row per script: each seed's wall clock and env steps to the
    stop rule (runs not stopped by it: how they ended) and the ratio of the script's mean wall clock
    to qmix.py's over the seeds both stopped; curves.png: the stop rule's win rate against the run's
    own clock (smaclite_maps.plot)."""
    lines = []
    for env in smaclite_maps.map_order(runs):  # a table a map: the script names fit their cells
        lines += [f"**`{env}`**", ""] if not lines else ["", f"**`{env}`**", ""]
        lines.append("| script | minutes to 90% won, per seed (mean) | env steps | / `qmix.py`'s |")
        lines.append("|---" * 4 + "|")
        stopped = {  # (line, seed) -> run, the runs the stop rule ended
            (r["line"], r["seed"]): r
            for r in runs
            if r["env"] == env and smaclite_maps.how_ended(r) == "stopped"
        }
        for line in dict.fromkeys(r["line"] for r in runs if r["env"] == env):
            members = sorted(
                (r for r in runs if (r["env"], r["line"]) == (env, line)), key=lambda r: r["seed"]
            )
            minutes = [
                f"{r['wall'] / 60:.1f}" if r in stopped.values() else smaclite_maps.how_ended(r)
                for r in members
            ]
            mine = [r["wall"] / 60 for r in members if r in stopped.values()]
            both = [s for (li, s) in stopped if li == line and ("qmix", s) in stopped]
            ratio = "-"
            if line != "qmix" and both:
                ratio = np.mean([stopped[line, s]["wall"] for s in both])
                ratio = f"{ratio / np.mean([stopped['qmix', s]['wall'] for s in both]):.2f}"
            seeds = [r["seed"] for r in members]  # said where they are not 1, 2, ...
            cells = [
                f"`{line}`"
                + (
                    f" (seeds {smaclite_maps.seed_list(seeds)})"
                    if seeds != [*range(1, len(seeds) + 1)]
                    else ""
                )
            ]
            cells.append(" / ".join(minutes) + (f" ({np.mean(mine):.1f})" if mine else ""))
            cells.append(" / ".join(smaclite_maps.thousands(r["steps"][-1]) for r in members))
            lines.append("| " + " | ".join(cells + [ratio]) + " |")
    lines += [
        "",
        "Per seed: seeds 1, 2, ... in order. / `qmix.py`'s: the ratio of the mean minutes over"
        " the seeds that both scripts' stop rule ended."
        f" Each run on: {report.machines(runs)}.",
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    smaclite_maps.plot(runs, out, columns=3, colours=colours, clock=True, faint=True)


def draw_aggregate(runs, out):
    """aggregate.md: per line, the IQM over seeds and envs of the final scores normalised per env
    by the lowest and highest final score of any run on it (rliable, stratified bootstrap 95% CI),
    and the probability that the first line's run beats each other line's."""
    finals = {(r["env"], r["line"], r["seed"]): final(r) for r in runs}
    envs, lines = sorted({k[0] for k in finals}), list(dict.fromkeys(k[1] for k in finals))
    bounds = {e: [v for k, v in finals.items() if k[0] == e] for e in envs}
    bounds = {e: (min(v), max(v) - min(v) or 1.0) for e, v in bounds.items()}
    seeds = sorted({k[2] for k in finals})
    score_dict = {
        line: np.array(
            [[(finals[e, line, s] - bounds[e][0]) / bounds[e][1] for e in envs] for s in seeds]
        )
        for line in lines
    }
    iqm, better = report.aggregate(score_dict), report.improvement(score_dict)
    rows = ["| script and flags | IQM [95% CI] | P(first line > this one) [95% CI] |"]
    rows.append("|---|---|---|")
    for line in lines:
        p = "" if line == lines[0] else "{:.2f} [{:.2f}, {:.2f}]".format(*better[lines[0], line])
        rows.append(f"| `{line}` | {'{:.2f} [{:.2f}, {:.2f}]'.format(*iqm[line])} | {p} |")
    rows += [
        "",
        f"Over {len(envs)} envs x {len(seeds)} seeds a line; each final score normalised per env"
        " to [0, 1] by the lowest and highest final score of any run on it; rliable, 2000"
        " stratified bootstrap resamples. First line: "
        f"`{lines[0]}`.",
    ]
    (out / "aggregate.md").write_text("\n".join(rows) + "\n")


def json_records(store):
    """The JSON records of a benchmark's folder of the store, by file name; exits if there are none."""
    records = [json.loads(p.read_text()) for p in sorted(Path(store).glob("*.json"))]
    if not records:
        sys.exit(f"redraw: error: no records under {store}")
    return records


def draw_throughput(store, out):
    """table.md: each record of benchmarks/throughput.py --record (a column each, the defaults
    first): the raw env's steps/s, qmix.py's and the peer's training steps/s and their ratios."""
    records = json_records(store)
    records.sort(key=lambda r: bool(r["qmix"]["args"]))
    raw = [(r["raw_before"] + r["raw_after"]) / 2 for r in records]
    head = [f"`{r['qmix']['args']}`" if r["qmix"]["args"] else "defaults" for r in records]
    peer = records[0]["peer"]
    name = f"[{peer['name']}]({peer['repo']})" if peer["repo"] else peer["name"]
    rows = [
        (
            "raw env, random policy (before / after)",
            [f"{r['raw_before']:,.0f} / {r['raw_after']:,.0f}" for r in records],
        ),
        ("`qmix.py` training, evaluation included", [f"{r['qmix']['sps']:,.0f}" for r in records]),
        (
            "**ratio `qmix.py` / raw env**",
            [f"**{r['qmix']['sps'] / w:.2f}**" for r, w in zip(records, raw, strict=True)],
        ),
        (
            f"{name}'s `{peer['script']}`, its defaults",
            [f"{r['peer']['sps']:,.0f}" for r in records],
        ),
        (
            f"ratio {name} / raw env",
            [f"{r['peer']['sps'] / w:.3f}" for r, w in zip(records, raw, strict=True)],
        ),
        (
            f"**`qmix.py` / {name}**",
            [f"**{r['qmix']['sps'] / r['peer']['sps']:.1f}x**" for r in records],
        ),
    ]
    lines = ["| steps/s on `" + records[0]["env"] + "` | " + " | ".join(head) + " |"]
    lines.append("|---" * (len(records) + 1) + "|")
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    cpus = sorted({f"{r['machine']['cpu']} ({r['machine']['cores']} cores)" for r in records})
    threads = sorted({r["torch_threads"] for r in records})
    lines += [
        "",
        "Each column: "
        + "; ".join(f"`{r['command']}`" for r in records)
        + f". On: {', '.join(cpus)};"
        f" torch {records[0]['versions'].get('torch', '?')} with {', '.join(map(str, threads))}"
        " intra-op threads (what the peer, which does not set them, runs with); the peer at its"
        f" commit of {peer['date']}.",
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    first = records[0]  # the home page's line: both scripts at their defaults
    (out / "summary.md").write_text(
        f"**Speed:** on LBF `{first['env']}`, `qmix.py` trains at {first['qmix']['sps']:,.0f} env"
        f" steps/s, {first['qmix']['sps'] / raw[0]:.2f} of the raw env's random-policy rate and"
        f" {first['qmix']['sps'] / first['peer']['sps']:.1f}x the `qmix.py` of {name} (a separate"
        f" project, {peer['repo'].removeprefix('https://github.com/')}), each at its"
        f" defaults, side by side on one {first['machine']['cpu']} ({first['machine']['cores']}"
        " cores; [Benchmarks](benchmarks.md#throughput)).\n"
    )


def draw_variants(store, out):
    """<variant>.md for each variant with records of benchmarks/throughput.py --variant --record:
    a row per record (the flags of both scripts and of the variant alone, the machine), each
    round's steps/s of both scripts and the ratio of the means. Records with --baseline (the same
    script in another checkout) go to <variant>_vs_<baseline name>.md."""
    records = json_records(store)
    groups = {}
    for r in records:
        base = (r.get("baseline") or {}).get("name")
        name = r["variant"].removesuffix(".py") + (f"_vs_{base.replace(' ', '_')}" if base else "")
        groups.setdefault(name, []).append(r)
    for name, mine in sorted(groups.items()):
        variant = mine[0]["variant"]
        other = next(k for k in mine[0]["speeds"] if k != variant)
        lines = [
            f"| env | flags of both | `{variant}` flags | `{variant}` steps/s, per round |"
            f" `{other}` steps/s, alternating | ratio of the means | on |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            ours, base = r["speeds"][variant], r["speeds"][other]
            cells = [f"`{r['env']}`"]
            cells += [f"`{r[k]}`" if r[k] else "defaults" for k in ("qmix_args", "variant_args")]
            cells += [" / ".join(f"{v:,.0f}" for v in x) for x in (ours, base)]
            cells.append(f"**{sum(ours) / sum(base):.3f}**")
            on = f"{r['machine']['cpu']} ({r['machine']['cores']} cores)"
            cells.append(on + (f", {r['gpu']}" if r.get("gpu") else ""))
            lines.append("| " + " | ".join(cells) + " |")
        steps = sorted({r["steps"] for r in mine})
        lines += [
            "",
            f"Each script trains {', '.join(f'{s:,}' for s in steps)} steps a round, evaluation"
            " included, at the defaults but for the flags shown. Each row: "
            + "; ".join(f"`{r['command']}`" for r in mine)
            + ".",
        ]
        (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def draw_scaling(store, out):
    """table.md: benchmarks/scaling.py --record's rates, a column per env, a row per script (qmix.py,
    then qmix_multienvs.py at each --num-envs), each with its ratio to qmix.py."""
    (record,) = json_records(store)
    (out / "table.md").write_text(scaling_table(record))


def scaling_table(record):
    envs = list(dict.fromkeys(r["env"] for r in record["rows"]))
    rate = {(r["env"], r["num_envs"]): r["sps"] for r in record["rows"]}
    counts = sorted({n for _, n in rate if n is not None})
    lines = ["| `--num-envs` | " + " | ".join(f"`{e}`" for e in envs) + " |"]
    lines.append("|---" * (len(envs) + 1) + "|")
    lines.append("| `qmix.py` | " + " | ".join(f"{rate[e, None]:,.0f}" for e in envs) + " |")
    for n in counts:
        cells = [f"{rate[e, n]:,.0f} ({rate[e, n] / rate[e, None]:.2f})" for e in envs]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    cpu, flags = record["machine"], record.get("multienvs_flags")
    flags = f" (`qmix_multienvs.py {flags}`)" if flags else ""
    lines += [
        "",
        f"`{record['command']}`: {record['steps']:,} steps a run ({record['smaclite_steps']:,} on"
        f" SMAClite), at the defaults{flags}; training steps/s, evaluation included (in brackets:"
        f" the ratio to `qmix.py`). On: {cpu['cpu']} ({cpu['cores']} cores).",
    ]
    return "\n".join(lines) + "\n"


def draw_host16(store, out):
    """scaling.md (scaling_table of scaling.json) and runs.md: a row per run of runs/ (each cut
    short by a time bound, host16.sh), the CPU learner's first: its learner's device, env steps
    reached by 60 / 140 s, its last steps/s, the workers' busy and the learner's waiting shares
    (charts.json, their mean from the 5th log on), the first evaluation won whole and the mean of
    the last 10 evaluations when the run ended."""
    (out / "scaling.md").write_text(scaling_table(json.loads((store / "scaling.json").read_text())))
    lines = ["| learner | env steps by 60 s / 140 s | steps/s at the end | workers busy / learner"]
    lines[0] += " waiting | first evaluation all won | last 10 evaluations, at the end |"
    lines.append("|---" * 6 + "|")
    for folder in sorted((store / "runs").iterdir(), key=lambda f: "cuda" in f.name):
        evals = [json.loads(line) for line in (folder / "evaluations.jsonl").open()]
        charts = json.loads((folder / "charts.json").read_text())
        command = (folder / "command.txt").read_text()
        steps = [max(e["step"] for e in evals if e["elapsed"] <= t) for t in (60, 140)]
        busy, waiting = (np.mean([v for _, v in charts[f"charts/{k}"][4:]]) for k in KEYS)
        won = next((e for e in evals if min(e["battle_won"]) == 1.0), None)
        won = won and f"{won['elapsed']:.0f} s (step {won['step']:,})"
        last = np.mean([np.mean(e["battle_won"]) for e in evals[-WINDOW:]])
        cells = ["cuda" if "--device cuda" in command else "CPU"]
        cells += [" / ".join(f"{n:,}" for n in steps), f"{charts['charts/SPS'][-1][1]:,.0f}"]
        cells += [f"{busy:.2f} / {waiting:.2f}", won or "none"]
        cells.append(f"{last:.2f} ({evals[-1]['elapsed']:.0f} s, step {evals[-1]['step']:,})")
        lines.append("| " + " | ".join(cells) + " |")
    (out / "runs.md").write_text("\n".join(lines) + "\n")


KEYS = ("envs_busy", "learner_waiting")


def wall_times(seconds):
    """Each run's wall clock, in minutes, or in seconds where every run took under two minutes."""
    if max(seconds) < 120:
        return " / ".join(f"{s:.0f}" for s in seconds) + " s"
    return " / ".join(f"{s / 60:.0f}" for s in seconds) + " min"


def plot_scores(runs, path, threshold, colours):
    """curves.png: a panel per env, each line (script and flags) drawn by smaclite_maps.draw_panel
    (the mean over seeds of each seed's trailing mean of WINDOW evaluations, with its band, each
    seed faint); one colour per line site-wide, one legend above the panels. 7.2 inches at 100 dpi:
    shown at about its own size in the docs' column, so 10 pt text is 13 px or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in runs))
    lines = [line for line in colours if any(r["line"] == line for r in runs)]
    stopped = threshold is not None and any(smaclite_maps.how_ended(r) == "stopped" for r in runs)
    cols, entries = min(2, len(envs)), len(lines) + stopped
    rows, top = -(-len(envs) // cols), 0.3 * -(-entries // 2) + 0.1  # inches for the legend
    fig, axes = plt.subplots(rows, cols, figsize=(7.2, 3.2 * rows + top), squeeze=False)
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    legend = {}
    for ax, env in zip(axes.flat, envs, strict=False):
        members = [r for r in runs if r["env"] == env]
        on = {line: colours[line] for line in lines}
        legend |= smaclite_maps.draw_panel(ax, members, on, metric(members[0]), threshold, True)
        label = "won" if metric(members[0]) == "battle_won" else "return"
        ax.set_title(env, fontsize=11)
        ax.set_xlabel("env steps (thousands)", fontsize=10)
        ax.set_ylabel(f"greedy {label} (last {WINDOW})", fontsize=10)
        ax.tick_params(labelsize=10)
    handles = [legend[line] for line in lines] + [smaclite_maps.stop_handle()] * stopped
    labels = lines + [f"a run stopped at {threshold or 0:g} (10 in a row)"] * stopped
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=10, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - top / (3.2 * rows + top)))
    smaclite_maps.save_figure(fig, path)
    plt.close(fig)


# The home page's grid of learning curves: (store, env, script and flags), one panel each, where
# the store holds them
HOME_CURVES = [
    ("lbf", "Foraging-8x8-2p-2f-coop-v3", "qmix"),
    ("mpe", "simple_spread_v3", "qmix"),
    ("smaclite", "3m", "qmix"),
    ("smaclite", "2s3z", "qmix"),
    ("smaclite", "5m_vs_6m", "qmix"),
    ("smaclite", "10m_vs_11m", "qmix"),
]


def draw_home_curves(root, path, colours):
    """A panel per task of HOME_CURVES: the mean over seeds of each seed's trailing mean of WINDOW
    evaluations (what the final score reads), with its band, each seed faint
    (smaclite_maps.draw_panel). 9 inches at 100 dpi, shown at its own size on the home page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for store, env, line in HOME_CURVES:
        folder = Path(root) / "benchmarks" / "results" / store
        runs = [r for r in report.load(folder) if (r["env"], r["line"]) == (env, line)]
        if runs:
            panels.append((env, line, runs))
    rows = -(-len(panels) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 2.9 * rows), squeeze=False)
    for ax, (env, line, runs) in zip(axes.flat, panels, strict=False):
        won = metric(runs[0]) == "battle_won"
        threshold = smaclite_maps.THRESHOLD if won else None
        smaclite_maps.draw_panel(ax, runs, {line: colours[line]}, metric(runs[0]), threshold, True)
        ax.set_title(f"{env} ({len(runs)} seed{'s' * (len(runs) > 1)})", fontsize=10)
        ax.set_xlabel("env steps (thousands)", fontsize=10)
        ax.set_ylabel(f"greedy {'won' if won else 'return'} (last {WINDOW})", fontsize=10)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    smaclite_maps.save_figure(fig, path)
    plt.close(fig)


def summary_table(rows):
    """The home page's and the README's table: one row per task and script (wall times, which
    depend on the machine, are on the script pages beside the CPU each run had)."""
    lines = [
        "| task | script and flags | seeds "
        "| final score (mean of the last 10 evaluations), per seed | mean | env steps |",
        "|---|---|---|---|---|---|",
    ]
    for page, env, line, seeds, finals, steps, _walls in rows:
        spec = ".2f" if all(0 <= f <= 1 for f in finals) else ".1f"
        cells = [f"[`{env}`]({page})", f"`{line}`", " / ".join(map(str, seeds))]
        cells += [" / ".join(f"{f:{spec}}" for f in finals), report.spread(finals, spec), steps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw(root, out_root, readme):
    """Draw every result of the store under root into out_root (docs/img/ or a temporary folder);
    write the README's results block into readme. -> the files written"""
    rows, machines = [], []
    stores = [Path(root) / "benchmarks" / "results" / r.store for r in RESULTS.values()]
    every = [r["line"] for s in stores if s.is_dir() for r in report.load(s)]
    colours = smaclite_maps.line_colours(every)  # one colour a line on every figure
    for name, result in RESULTS.items():
        store, out = Path(root) / "benchmarks" / "results" / result.store, Path(out_root) / name
        out.mkdir(parents=True, exist_ok=True)
        if result.kind in DRAWERS:
            DRAWERS[result.kind](store, out)
            continue
        runs = report.load(store)
        if not runs:
            sys.exit(f"redraw: error: no evaluation records under {store}")
        if result.kind == "clock":
            draw_clock(runs, out, colours)
            continue
        if result.kind == "smaclite":
            with contextlib.redirect_stdout(io.StringIO()):
                smaclite_maps.main([str(store), "--out", str(out)], colours)
            continue  # its own rows on the home page (summary.md)
        if result.aggregate:
            draw_aggregate(runs, out)
        for row in draw_scores(result, runs, out, colours):
            rows += [(result.page, *row)] * result.home
        machines += runs * result.home
    table = summary_table(rows) + f"\nThe runs, on: {report.machines(machines)}.\n"
    draw_home_curves(root, Path(out_root) / "curves.png", colours)
    (Path(out_root) / "results.md").write_text(table)
    headline = (Path(out_root) / "smaclite" / "headline.md").read_text()  # the table: its page
    speed = (Path(out_root) / "throughput" / "summary.md").read_text()
    block = f"{table}\n{headline}\n{speed}"
    text = Path(readme).read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    block = re.sub(r"\]\((?!https?://)", "](docs/", block)  # the docs' own pages, from the root
    Path(readme).write_text(text[:start] + "\n" + block + text[end:])
    folders = [Path(out_root) / name for name in RESULTS]
    home = [Path(out_root) / "results.md", Path(out_root) / "curves.png"]
    return sorted(p for f in folders for p in f.iterdir()) + home


def draw_tables(store, out):
    """<name>.md for each record of benchmarks/record.py: the markdown tables its command printed,
    in order, then the command and the machine it ran on."""
    for path in sorted(Path(store).glob("*.json")):
        r = json.loads(path.read_text())
        table = [line for line in r["output"].splitlines() if line.startswith("|")]
        lines = []  # a blank line before each table's header (a row followed by |---) but the first
        for i, line in enumerate(table):
            header = i + 1 < len(table) and table[i + 1].startswith("|---")
            lines += [""] * (header and i > 0) + [line]
        on = f"{r['machine']['cpu']} ({r['machine']['cores']} cores)"
        lines += ["", f"Printed by `{r['command']}`, on {on}."]
        (out / f"{path.stem}.md").write_text("\n".join(lines) + "\n")


DRAWERS = {
    "throughput": draw_throughput,
    "variants": draw_variants,
    "scaling": draw_scaling,
    "tables": draw_tables,
    "host16": draw_host16,
}


def png_size(path):
    """(width, height) of a PNG, from its header."""
    return struct.unpack(">II", Path(path).read_bytes()[16:24])


def check(root):
    """Draw into a temporary folder and compare with what is committed under root. -> the first
    difference, or None"""
    with tempfile.TemporaryDirectory() as tmp:
        readme = Path(tmp) / "README.md"
        readme.write_text((Path(root) / "README.md").read_text())
        for path in draw(root, Path(tmp) / "img", readme):
            committed = Path(root) / "docs" / "img" / path.relative_to(Path(tmp) / "img")
            if not committed.exists():
                return f"{committed.relative_to(root)} is not committed"
            if path.suffix == ".png":
                if png_size(path) != png_size(committed):
                    sizes = f"{png_size(committed)} pixels, redrawn {png_size(path)}"
                    return f"{committed.relative_to(root)}: {sizes}"
            elif path.read_text() != committed.read_text():
                return f"{committed.relative_to(root)} differs from its redrawing"
        if readme.read_text() != (Path(root) / "README.md").read_text():
            return "README.md's results table differs from its redrawing"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--root", default=str(ROOT), help="the repository (default: this one)")
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    if args.check:
        if difference := check(args.root):
            print(f"redraw: {difference}: run python benchmarks/redraw.py", file=sys.stderr)
            return 1
        print(f"redraw: every table and figure of {len(RESULTS)} results matches the store")
        return 0
    written = draw(args.root, Path(args.root) / "docs" / "img", Path(args.root) / "README.md")
    print(f"redraw: {len(written)} files and README.md's results table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
