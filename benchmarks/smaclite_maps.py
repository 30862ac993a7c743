"""QMIX on every SMAClite map (docs/smaclite.md): its table and figure, from the results store.

    python benchmarks/smaclite_maps.py benchmarks/results/smaclite --out docs/img/smaclite
    python benchmarks/smaclite_maps.py sweeps/smaclite --keep benchmarks/results/smaclite   # first keep a sweep's runs

writes into --out: table.md (the page's table), summary.md (the home page's rows), one
file per variant page (qmix_lstm.md, qmix_memefficient.md) and curves.png. --keep DIR first copies
each ended run of a sweep into DIR (cleanmarl.report.keep: meta, how it ended, evaluations, the best checkpoint's
re-evaluation; no checkpoints, no states) and then reads DIR: runs from several machines or sessions add up there.
benchmarks/redraw.py runs this on the committed store.

Per map and script, each seed shown: the env step at which it reached 90% won (the first evaluation at which it and the 9
before it average >= 0.9, the sweep's --stop-at rule), with the mean over the seeds that got there and k/n; the final
win rate (the mean of the last 10 evaluations) of the runs that ran the full 2M steps, a stopped run marked as such
(its last window is >= 0.9 by the stop rule itself, so it is never averaged with them); the best checkpoint's win rate
over 50 fresh battles (--absolute 10); the run's own wall clock. Means over 2-4 seeds come with their range. Beside it,
StarCraft II's figures (another simulator): the SMAC paper's QMIX and PyMARL2's (MAPS). The maps not run yet are
named under the table. The aggregate: the IQM of the best
checkpoints' win rates with rliable's stratified bootstrap CI (Agarwal et al., 2021) from 5 seeds a map, the runs' range
below that, over the maps every seed of which ended, NO_TEST left out and named. Figure: each run's win rate against env steps and against wall time, one panel per
map (each evaluation faint, the mean over it and the 9 before it, which --stop-at reads, solid).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cleanmarl import report  # noqa: E402

WINDOW, THRESHOLD, SEEDS = 10, 0.9, 3  # the sweep's --stop-window and --stop-at; seeds per map
# Every map cleanmarl.env.smaclite offers, in the SMAC paper's order of difficulty, then the others:
# map -> (SMAC's difficulty, QMIX's win rate on StarCraft II in the SMAC paper (Samvelyan et al.,
# 2019), as tabulated in FlickerNiko/SAC-QMIX's README; PyMARL2's (Hu et al., 2021; its README at
# 8ccac7c, SC2.4.10): one general set of hyperparameters, and tuned per map). None: not published.
MAPS = {
    "2s_vs_1sc": ("easy", 1.00, None, 1.00),
    "2s3z": ("easy", 0.99, None, 1.00),
    "3s5z": ("easy", 0.97, None, 1.00),
    "1c3s5z": ("easy", 0.97, None, 1.00),
    "10m_vs_11m": ("easy", 0.97, None, None),
    "2c_vs_64zg": ("hard", 0.58, 1.00, 1.00),
    "bane_vs_bane": ("hard", 0.85, None, 1.00),
    "5m_vs_6m": ("hard", 0.70, 0.90, 0.90),
    "3s_vs_5z": ("hard", 0.87, 1.00, 1.00),
    "3s5z_vs_3s6z": ("super hard", 0.02, 0.75, 0.93),
    "27m_vs_30m": ("super hard", 0.49, 1.00, 1.00),
    "MMM2": ("super hard", 0.69, 1.00, 1.00),
    "corridor": ("super hard", 0.01, 1.00, 1.00),
    "8m_vs_9m": ("-", None, 1.00, 1.00),
    "3m": ("-", None, None, None),
    "8m": ("-", None, None, 1.00),
    "25m": ("-", None, None, None),
    "MMM": ("-", None, None, None),
    "2m_vs_1z": ("-", None, None, None),
    "3s_vs_3z": ("-", None, None, None),
    "3s_vs_4z": ("-", None, None, None),
    "so_many_baneling": ("-", None, None, None),
}
# qmix_memefficient.py where qmix.py's padded buffer (5000 episodes at the limit) would take the
# whole 24 GiB machine or more (docs/qmix_memefficient.md#memory): the same QMIX, the same losses
# for the same seed
MEMEFFICIENT = ("25m", "27m_vs_30m", "bane_vs_bane", "corridor")
SWEEP = (
    "python -m cleanmarl.sweep --scripts {script} --envs {env} --seeds 1-3 --out sweeps/smaclite"
    " --stop-at 0.9 --stop-window 10 --absolute 10 -- --save-model --total-timesteps 2000000"
)


# The paper's recurrent agents (qmix_lstm.py) beside qmix.py where memory may matter
RECURRENT = ("2s_vs_1sc", "3s_vs_5z", "MMM2", "2m_vs_1z")
# qmix.py's per-map flags where its defaults do not win a map (docs/smaclite.md), as PyMARL2
# publishes per-map settings: run beside the defaults, in rows of their own, never aggregated.
# 2s_vs_1sc: 3 of 3 seeds within 2M steps, where the defaults win 2 (docs/smaclite.md).
PER_MAP_FLAGS = {"2s_vs_1sc": "--gamma 0.995"}
# Flags a script needs on a map to fit the machine, not to learn: qmix_lstm.py's buffer is padded
# and has no qmix_memefficient.py counterpart, so on corridor it keeps 2500 episodes (11.8 GB at
# the limit) instead of 5000 (23.5 GB). Planned, in rows of their own (flags change what it learns).
MEMORY_FLAGS = {("qmix_lstm", "corridor"): "--buffer-size 2500"}
# The variants whose pages show their SMAClite rows (beside): <script>.md beside table.md
VARIANTS = ("qmix_lstm", "qmix_memefficient")


def planned(script, env, flags, seed):
    """Whether grid_commands' plan runs this combination (3 seeds a map and line)."""
    line = {
        "qmix_memefficient": env in MEMEFFICIENT,
        "qmix_lstm": env in RECURRENT,
        "qmix": env in MAPS and env not in MEMEFFICIENT,
    }.get(script, False)
    return seed <= SEEDS and ((line and not flags) or flags == own_flags(script, env))


def own_flags(script, env):
    """The flags the plan gives `script` on `env` (PER_MAP_FLAGS for qmix, MEMORY_FLAGS), or None."""
    return MEMORY_FLAGS.get((script, env), PER_MAP_FLAGS.get(env) if script == "qmix" else None)


def seed_list(seeds):
    """The sweep's --seeds for sorted seeds: 1-5 where they run on, else 1 4 5."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return " ".join(map(str, seeds))


def grid_commands(runs=()):
    """The sweep commands of the whole grid: qmix.py's maps, qmix_memefficient.py's,
    qmix_lstm.py's, qmix.py's per-map flags, the memory flags, then one for each other flag set,
    map and seeds the store holds (the probes of a map's flags, the home page's extra seeds)."""
    plain = [m for m in MAPS if m not in MEMEFFICIENT]
    per_map = [
        SWEEP.format(script="qmix", env=env).replace(" --out", f' --set "{flags}" --out')
        for env, flags in PER_MAP_FLAGS.items()
    ] + [
        SWEEP.format(script=script, env=env).replace(" --out", f' --set "{flags}" --out')
        for (script, env), flags in MEMORY_FLAGS.items()
    ]
    seeds_of = {}  # (script, flags, map) -> the seeds run beyond the plan
    for r in runs:
        script, flags = r["meta"]["script"].removesuffix(".py"), r["meta"]["flag_set"].strip()
        if not planned(script, r["env"], flags, r["seed"]):
            seeds_of.setdefault((script, flags, r["env"]), []).append(r["seed"])
    extra = {}  # (script, flags, seeds) -> the maps run so
    for (script, flags, env), seeds in sorted(seeds_of.items()):
        extra.setdefault((script, flags, seed_list(sorted(seeds))), []).append(env)
    others = []
    for (script, flags, seeds), envs in extra.items():
        command = SWEEP.format(script=script, env=" ".join(envs))
        command = command.replace("--seeds 1-3", f"--seeds {seeds}")
        others.append(command.replace(" --out", f' --set "{flags}" --out') if flags else command)
    return [
        SWEEP.format(script="qmix", env=" ".join(plain)),
        SWEEP.format(script="qmix_memefficient", env=" ".join(MEMEFFICIENT)),
        SWEEP.format(script="qmix_lstm", env=" ".join(RECURRENT)),
        *per_map,
        *others,
    ]


# Maps the docs call no test on SMAClite (docs/smaclite.md): left out of the aggregate, named
NO_TEST = {"2c_vs_64zg": "a random policy wins it on SMAClite"}


def final_win_rate(run, window=WINDOW):
    """The mean win rate of a run's last `window` evaluations."""
    return float(report.scores(run, "battle_won")[-window:].mean())


def absolute_win_rate(run):
    """The best checkpoint's win rate over the sweep's --absolute re-evaluation, or None."""
    return float(np.mean(run["absolute"]["battle_won"])) if run["absolute"] else None


def how_ended(run):
    """ "completed" (the full budget), "stopped" (--stop-at), "failed", or "under way"."""
    return (run["ended"] or {}).get("ended", "under way")


def finished(run):
    """Whether the run ended as planned: its full budget, or stopped at 90% by the rule."""
    return how_ended(run) in ("completed", "stopped")


def map_order(runs):
    """The maps run, in MAPS' order, then any other."""
    maps = {r["env"] for r in runs}
    return [m for m in MAPS if m in maps] + sorted(maps - set(MAPS))


def rows(runs):
    """One dict per map and line (script and flag set), maps in map_order, a map's lines at their
    defaults first."""
    out = []
    for env in map_order(runs):
        lines = {r["line"] for r in runs if r["env"] == env}
        for line in sorted(lines, key=lambda line: (" " in line, line)):
            members = sorted(
                (r for r in runs if (r["env"], r["line"]) == (env, line)), key=lambda r: r["seed"]
            )
            out.append(row(env, line, members))
    return out


def thousands(step):
    """An env step count, short: 1.74M, 96k, or in full below 10,000 (720)."""
    if step >= 1e6:
        return f"{step / 1e6:.2f}M"
    return f"{step / 1e3:.0f}k" if step >= 1e4 else f"{step:,.0f}"


def row(env, line, members):
    """The table's cells for one map and line over its finished runs (members, by seed), each
    seed's value shown, joined by " / " in seed order."""
    done = [r for r in members if finished(r)]
    reached = {r["seed"]: report.steps_to(r, "battle_won", THRESHOLD, WINDOW) for r in done}
    got = [s for s in reached.values() if s is not None]
    absolute = [absolute_win_rate(r) for r in done]
    final = [final_win_rate(r) for r in done if how_ended(r) == "completed"]
    return dict(
        env=env,
        script=line,
        seeds=" / ".join(str(r["seed"]) for r in done) or "-",
        done=len(done),
        reached=" / ".join("never" if s is None else thousands(s) for s in reached.values()),
        reached_mean=(
            f"{report.spread([s / 1e3 for s in got], ',.0f', 'k')} ({len(got)}/{len(done)})"
            if got
            else f"- (0/{len(done)})"
        ),
        final=" / ".join(
            f"{final_win_rate(r):.2f}" if how_ended(r) == "completed" else "stopped" for r in done
        ),
        final_mean=report.spread(final) if final else "-",
        absolute=" / ".join("-" if a is None else f"{a:.2f}" for a in absolute),
        wall=" / ".join(f"{r['wall'] / 60:.0f}" for r in done) + " min" if done else "-",
        not_finished=[
            (r["seed"], how_ended(r), int(r["steps"][-1]), final_win_rate(r))
            for r in members
            if not finished(r)
        ],
        published=MAPS.get(env, ("-", None, None, None)),
    )


def pct(p):
    return "-" if p is None else f"{p:.0%}"


def sc2(published):
    """The SMAC paper's and PyMARL2's (general / tuned) figures on StarCraft II."""
    _, smac, general, tuned = published
    return f"{pct(smac)} | {pct(general)} / {pct(tuned)}"


SECTIONS = ("2s_vs_1sc", "2m_vs_1z", "3s_vs_5z", "so_many_baneling", "2c_vs_64zg")  # notes


def markdown(table, runs=()):
    """Two tables: the core (map, difficulty, script and flags, 90% won at with k/n, best
    checkpoint), narrow enough for the page's column, each map linked to its notes where it has
    some; then each seed's values and StarCraft II's published figures."""
    lines = [
        "| map | SMAC's difficulty | script and flags | 90% won at: mean (k/n) "
        "| best checkpoint over 50 battles, per seed |",
        "|---" * 5 + "|",
    ]
    for r in table:
        notes = f"[`{r['env']}`](smaclite_notes.md#{r['env']})"
        name = notes if r["env"] in SECTIONS else f"`{r['env']}`"
        lines.append(
            f"| {name} | {r['published'][0]} | `{r['script']}` | {r['reached_mean']} "
            f"| {r['absolute']} |"
        )
    lines += [
        "",
        "Each seed, and StarCraft II's figures (for orientation only):",
        "",
        "| map | script | seeds | 90% won at, per seed | final win rate, per seed | its mean "
        "| wall time per run | SMAC paper on SC2 | PyMARL2 on SC2 |",
        "|---" * 9 + "|",
    ]
    for r in table:
        lines.append(
            f"| `{r['env']}` | `{r['script']}` | {r['seeds']} | {r['reached']} | {r['final']} "
            f"| {r['final_mean']} | {r['wall']} | {sc2(r['published'])} |"
        )
    others = [
        f"`{r['env']}` seed {seed} {how} at {steps:,} steps ({won:.2f} won over its last 10 evaluations)"
        for r in table
        for seed, how, steps, won in r["not_finished"]
    ]
    if others:
        lines += ["", "Not in the table: " + "; ".join(others) + "."]
    run = {r["env"] for r in table}
    if not_run := [f"`{m}`" for m in MAPS if m not in run]:
        lines += ["", f"Not run yet ({len(not_run)} of {len(MAPS)} maps): {', '.join(not_run)}."]
    lines += [
        "",
        "The grid's commands (a run stopped part-way resumes when its command is run again):",
        "",
        "```bash",
    ]
    lines += grid_commands(runs)
    return "\n".join(lines + ["```"])


def algorithm(line):
    """The aggregate's name for a line: qmix_memefficient.py is qmix.py's QMIX (the same losses for the same seed) with
    another buffer, so their maps pool; other scripts and flag sets stay apart."""
    return line.replace("qmix_memefficient", "qmix")


def aggregate(runs):
    """[(algorithm, IQM, low, high, maps, seeds, "CI" or "range")]: the best checkpoints' win rates over maps x seeds that each
    algorithm finished (rliable's IQM and stratified bootstrap CI needs every seed on every map), see common_seeds;
    the maps in NO_TEST left out; a line with flags (a map's own settings) is no algorithm of its own: not aggregated."""
    out = []
    for name in sorted({algorithm(r["line"]) for r in runs if " " not in r["line"]}):
        done = [r for r in runs if finished(r) and r["absolute"] and algorithm(r["line"]) == name]
        done = [r for r in done if r["env"] not in NO_TEST]
        maps, seeds = common_seeds(
            {m: {r["seed"] for r in done if r["env"] == m} for m in {r["env"] for r in done}}
        )
        if seeds:
            final = {(r["env"], r["seed"]): absolute_win_rate(r) for r in done}
            scores = np.array([[final[m, s] for m in maps] for s in seeds])
            if len(seeds) >= report.MIN_CI_SEEDS:
                out.append((name, *report.aggregate({name: scores})[name], maps, seeds, "CI"))
            else:  # rliable's bootstrap over fewer seeds a map only says what the range says
                iqm = report.aggregate({name: scores})[name][0]
                out.append((name, iqm, scores.min(), scores.max(), maps, seeds, "range"))
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


SCRIPTS = ("qmix", "qmix_lstm", "qmix_memefficient", "qmix_multienvs")  # their colours first
# Distinct colours: tab10's without its grey (the threshold's line), cyan kept away from blue
PALETTE = [*(f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8)), "k", "#b8860b", "#000080", "C9", "#66cdaa"]


def line_colours(lines):
    """line (script and flags) -> its colour, the same on every figure drawn with the same lines
    (benchmarks/redraw.py passes every line of the store): the scripts first, then the flag sets."""
    order = sorted(set(lines), key=lambda line: (" " in line, line))
    order.sort(key=lambda line: SCRIPTS.index(line) if line in SCRIPTS else len(SCRIPTS))
    return {line: PALETTE[i % len(PALETTE)] for i, line in enumerate(order)}


def trailing(won, window=WINDOW):
    """The stop rule's mean over the last `window` evaluations, from the window-th one on."""
    return np.convolve(won, np.ones(window) / window, mode="valid")


def draw_panel(
    ax, members, colours, metric, threshold=None, faint=False, window=WINDOW, clock=False
):
    """On ax, per line of members (runs of one env): the mean over its seeds of each seed's
    trailing mean of `window` evaluations, from the step at which every seed's window is full, with
    a band (the seeds' range under 5 seeds, a 95% bootstrap CI from 5); a run stopped by --stop-at
    held at its last value and its stop marked on the threshold; faint: each seed's own line too.
    x: env steps in thousands, or with clock the run's own clock in minutes. -> {line: legend
    handle}"""
    from matplotlib.lines import Line2D

    at, scale = ("times", 60) if clock else ("steps", 1e3)
    handles = {}
    for line, colour in colours.items():
        seeds = [r for r in members if r["line"] == line and len(r[at]) >= window]
        if not seeds:
            continue
        start = max(r[at][window - 1] for r in seeds)
        x = np.linspace(start, max(r[at][-1] for r in seeds), 200)
        values = []
        for r in seeds:  # each seed's trailing mean, held at its last value after it stops
            steps, mean = r[at][window - 1 :], trailing(report.scores(r, metric), window)
            values.append(np.interp(x, steps, mean))
            if faint:
                ax.plot(steps / scale, mean, color=colour, lw=0.6, alpha=0.3)
            if threshold is not None and how_ended(r) == "stopped":
                ax.plot(steps[-1] / scale, threshold, "|", color=colour, ms=7, mew=1.2)
        if len(values) < report.MIN_CI_SEEDS:
            mean, low, high = np.mean(values, 0), np.min(values, 0), np.max(values, 0)
        else:
            mean, low, high = report.bootstrap_ci(values)
        ax.fill_between(x / scale, low, high, color=colour, alpha=0.2, lw=0)
        ax.plot(x / scale, mean, color=colour, lw=1.5, marker="o" if start == x[-1] else None)
        handles[line] = Line2D([], [], color=colour, lw=2)
    if threshold is not None:
        ax.axhline(threshold, color="grey", lw=0.6, ls=":")
    ax.set_xlim(left=0)
    return handles


def stop_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="k", marker="|", ls="none", ms=8, mew=1.2)


def save_figure(fig, path, dpi=100):
    """fig -> path, a PNG whose metadata says the size of its smallest text as drawn (MinTextPx:
    points * dpi / 72), which tests/test_site.py scales to the width the docs show it at."""
    import matplotlib.text

    hidden = {id(t) for ax in fig.axes if not ax.axison for t in ax.findobj(matplotlib.text.Text)}
    texts = [t for t in fig.findobj(matplotlib.text.Text) if id(t) not in hidden]
    sizes = [t.get_fontsize() for t in texts if t.get_visible() and t.get_text().strip()]
    fig.savefig(path, dpi=dpi, metadata={"MinTextPx": f"{min(sizes) * dpi / 72:.2f}"})


def plot(runs, out, columns=4, colours=None, clock=False, faint=False):
    """curves.png: a panel per map (small multiples, columns a row) drawn by draw_panel (the stop
    rule's trailing win rate, the mean over seeds with its band, stops marked); one colour per line
    (colours: line_colours of every line drawn on the site), one legend above the panels; clock:
    against the runs' own clocks; faint: each seed's line too. Text of 14 pt on a 1300 px figure:
    10 px or more where the docs show it 688 px wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = map_order(runs)
    colours = colours or line_colours(r["line"] for r in runs)
    rows = -(-len(maps) // columns)
    top = 2.0 if rows > 1 else 1.2  # inches for the legend
    fig, grid = plt.subplots(rows, columns, figsize=(13, 2.6 * rows + top), squeeze=False)
    legend = {}
    for ax, env in zip(grid.flat, maps, strict=False):  # panels left over stay blank
        members = [r for r in runs if r["env"] == env]
        legend |= draw_panel(ax, members, colours, "battle_won", THRESHOLD, faint, clock=clock)
        ax.set_title(env, fontsize=15)
        ax.set_ylim(-0.03, 1.03)
        ax.tick_params(labelsize=14)
    for ax in grid.flat[len(maps) :]:
        ax.axis("off")
    for ax in grid[:, 0]:
        ax.set_ylabel("won (last 10)", fontsize=14)
    for ax in grid.flat[max(0, len(maps) - columns) : len(maps)]:  # each column's bottom panel
        ax.set_xlabel("wall clock (minutes)" if clock else "env steps (thousands)", fontsize=14)
    labels = [line for line in colours if line in legend]
    handles = [*(legend[line] for line in labels), stop_handle()]
    labels.append("a run stopped at 90% won")
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=14, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - top / (2.6 * rows + top)))
    save_figure(fig, out / "curves.png")
    plt.close(fig)


def main(argv=None, colours=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a folder of the results store, or a sweep's with --keep")
    parser.add_argument("--out", default="docs/img/smaclite", help="folder of the table and figure")
    parser.add_argument(
        "--keep", metavar="DIR", help="keep the sweep's ended runs in DIR, then read DIR"
    )
    args = parser.parse_args(argv)
    if args.keep:
        copied = report.keep(args.sweep_dir, args.keep)
        print(
            f"smaclite_maps: kept {len(copied)} ended runs' records in {args.keep}", file=sys.stderr
        )
        args.sweep_dir = args.keep
    runs = [r for r in report.load(args.sweep_dir) if "battle_won" in r["records"][0]]
    if not runs:
        sys.exit(f"smaclite_maps: error: no SMAClite evaluation records under {args.sweep_dir}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out, colours=colours)
    table = rows(runs)
    hours = sum(r["wall"] for r in runs if finished(r)) / 3600
    text = (
        markdown(table, runs)
        + f"\n\nWall time of the runs in the table together: {hours:.1f} hours.\n"
    )
    text += solved(table)
    text += f"\nEach run on one core of: {report.machines(runs)}.\n"
    text += f"\nSMAClite physics, as the runs printed it: {physics(runs)}.\n"
    for name, iqm, low, high, maps, seeds, kind in aggregate(runs):
        left_out = [f"`{m}` ({why})" for m, why in NO_TEST.items() if m in {r["env"] for r in runs}]
        text += (
            f"\nIQM of the best checkpoints' win rate, `{name}`, over {len(maps) * len(seeds)} runs:"
            f" {', '.join(f'`{m}`' for m in maps)}, seeds {', '.join(map(str, seeds))}: {iqm:.3f}"
            + (
                f", 95% stratified bootstrap CI [{low:.3f}, {high:.3f}]"
                if kind == "CI"
                else f" (the runs' range {low:.3f} to {high:.3f}; an interval needs"
                f" {report.MIN_CI_SEEDS} seeds a map)"
            )
            + (f"; left out: {', '.join(left_out)}" if left_out else "")
            + ".\n"
        )
    (out / "table.md").write_text(text)
    (out / "summary.md").write_text(summary(table))
    (out / "headline.md").write_text(headline(table))
    for script in VARIANTS:
        (out / f"{script}.md").write_text(beside(table, script))
    print(text)
    return 0


def headline(table, seeds=3):
    """The home page's first-screen line: on how many maps `qmix` at its defaults wins 90% on every
    seed (solved's count)."""
    won, grid = solved_maps(table, "qmix", seeds)[:2]
    return (
        f"**SMAClite:** `qmix.py` at its defaults (`qmix_memefficient.py` where the padded buffer does"
        f" not fit) reaches 90% won on every seed ({seeds} or more) within 2M env steps on"
        f" **{len(won)} of the {len(grid)} maps** ([the {len(grid)}-map table](smaclite.md)).\n"
    )


def solved_maps(table, name, seeds=3):
    """Of the maps `name` runs at its defaults: those won 90% on each of `seeds` or more ended runs,
    the map grid, those where a seed did not, those with fewer ended runs."""
    grid = RECURRENT if name == "qmix_lstm" else tuple(MAPS)
    mine = {
        r["env"]: r
        for r in table
        if algorithm(r["script"]) == name and r["done"] >= seeds and r["env"] in grid
    }
    every = {m: r["reached_mean"].endswith(f"({r['done']}/{r['done']})") for m, r in mine.items()}
    won = [m for m in grid if every.get(m)]
    lost = [m for m in grid if m in mine and not every[m]]
    return won, grid, lost, [m for m in grid if m not in mine]


def solved(table, seeds=3):
    """Issue 46's count, per script at its defaults over the maps its grid runs (qmix_memefficient
    pooled with qmix, as in the aggregate): the maps it wins 90% on in each of `seeds` ended runs,
    those where a seed did not, and those with fewer ended runs, each by name (a clause with no
    map is left out)."""
    text = ""
    for name in sorted({algorithm(r["script"]) for r in table if " " not in r["script"]}):
        won, grid, lost, short = solved_maps(table, name, seeds)
        names = lambda maps: ", ".join(f"`{m}`" for m in maps)  # noqa: E731
        pooled = [m for m in MEMEFFICIENT if m in grid]
        text += (
            f"\n`{name}` at its defaults"
            + (f" (`qmix_memefficient` on {names(pooled)})" if name == "qmix" else "")
            + f" reaches 90% won on {seeds} of {seeds} seeds within 2M steps on {len(won)} of the"
            f" {len(grid)} maps{'' if len(grid) == len(MAPS) else ' it runs on'}"
            f" ({names(won)})"
            + "".join(f", `{m}` among them no test ({NO_TEST[m]})" for m in won if m in NO_TEST)
            + (f"; not on every seed on {len(lost)} ({names(lost)})" if lost else "")
            + (f"; fewer than {seeds} ended runs on {len(short)} ({names(short)})" if short else "")
            + ".\n"
        )
    return text


def summary(table):
    """The home page's rows: map, script, each seed's step to 90% and best checkpoint, SC2's; of
    the lines with flags only those the plan gives (own_flags)."""
    lines = [
        "| map | script | 90% won at, per seed (k/n) | best checkpoint over 50 battles, per seed "
        "| SMAC paper on SC2 | PyMARL2 on SC2 |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        script, _, flags = r["script"].partition(" ")
        if flags and flags != own_flags(script, r["env"]):
            continue  # other flags (a probe): the page's table only
        k_n = r["reached_mean"].rsplit(" ", 1)[-1]
        lines.append(
            f"| [`{r['env']}`](smaclite.md) | `{r['script']}` | {r['reached']} {k_n} "
            f"| {r['absolute']} | {sc2(r['published'])} |"
        )
    return "\n".join(lines) + "\n"


def beside(table, script):
    """A variant's page: its rows (the defaults, and its own_flags) and `qmix`'s at the defaults
    (`qmix_memefficient`'s where it stands in) on the same maps, in the home page's columns (the
    page's table has every row)."""
    ours = lambda r: r["script"].split()[0] == script  # noqa: E731
    maps = {r["env"] for r in table if ours(r)}
    mine = [r for r in table if r["env"] in maps and (ours(r) or algorithm(r["script"]) == "qmix")]
    return summary(mine) if mine else f"No run of `{script}` has ended yet.\n"


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
