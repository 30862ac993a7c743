"""The pure helpers of benchmarks/ (their end-to-end runs are in test_smoke.py where cheap)."""

import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np

from cleanmarl import sweep as cleanmarl_sweep

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_curves", ROOT / "benchmarks" / "plot_curves.py")
plot_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_curves)


def test_reached_finds_the_first_window_at_the_threshold():
    steps = np.arange(1, 13) * 1000
    wins = np.array(
        [0.0, 0.2, 0.8, 0.8, 1.0, 1.0, 0.8, 1.0, 0.8, 0.8, 1.0, 1.0]
    )  # 5 battles per evaluation
    step, best = plot_curves.reached(steps, wins, 0.9, 3)
    assert step == 6000  # wins[3:6] average 0.933 and end at step 6000; wins[2:5] average 0.867
    assert best == np.max(np.convolve(wins, np.ones(3), "valid") / 3)


def test_reached_counts_an_exact_threshold_and_reports_never():
    steps = np.arange(4)
    wins = np.array(
        [0.8, 1.0, 1.0, 0.8]
    )  # averages 0.9, which floating point computes as 0.8999999999999999
    assert plot_curves.reached(steps, wins, 0.9, 4)[0] == 3
    step, best = plot_curves.reached(steps, wins, 0.95, 4)
    assert step is None and best < 0.95
    step, best = plot_curves.reached(steps[:3], wins[:3], 0.5, 4)  # fewer values than the window
    assert step is None and best != best


spec = importlib.util.spec_from_file_location("hard_maps", ROOT / "benchmarks" / "hard_maps.py")
hard_maps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hard_maps)


def fake_run(sweep, env, seed, won, done=True, script="qmix.py"):
    """A sweep's combination folder as cleanmarl.sweep leaves it: meta.json, done, one run's evaluations."""
    folder = sweep / f"{script[:-3]}__{env}__defaults__{seed}"
    (folder / "runs" / f"{env}__qmix__{seed}__1700000000").mkdir(parents=True)
    (folder / "meta.json").write_text(
        json.dumps(dict(script=script, env=env, flag_set="", seed=seed))
    )
    if done:
        (folder / "done").write_text("1.0\n")
    records = [dict(step=1000 * (k + 1), time=k, elapsed=60.0 * (k + 1), returns=[0.0], lengths=[1], battle_won=[w])
               for k, w in enumerate(won)]  # fmt: skip
    (folder / "runs" / f"{env}__qmix__{seed}__1700000000" / "evaluations.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records)
    )


def test_hard_maps_table_steps_to_90_final_win_rate_under_way_and_the_aggregate(tmp_path, capsys):
    """Steps to 90% over the seeds that got there (k/n), the final win rate as the mean of the last 10 evaluations, a
    run under way named with its steps, PyMARL2's SC2 figure beside it, and the IQM over the finished maps."""
    sweep = tmp_path / "sweep"
    fake_run(
        sweep, "MMM2", 1, [0.0] * 5 + [0.8, 1.0] * 5
    )  # windows: the first >= 0.9 ends at the 15th: step 15000
    fake_run(sweep, "MMM2", 2, [0.0] * 4 + [1.0] * 10)  # the 13th (one loss in it): step 13000
    fake_run(sweep, "MMM2", 3, [0.2] * 12)  # finished without reaching it
    fake_run(sweep, "corridor", 1, [1.0] * 10, script="qmix_memefficient.py")
    fake_run(sweep, "corridor", 2, [0.0] * 4, done=False, script="qmix_memefficient.py")
    fake_run(
        sweep, "MMM2", 1, [0.0] * 20, script="qmix_lstm.py"
    )  # another script on a map: a row of its own
    for folder in sweep.iterdir():  # the line the runs print; one run resumed once
        physics = "SMAClite physics: C++ RVO2, fast path (docs/env.md, SMAClite speed)\n"
        (folder / "log.txt").write_text(physics * (2 if "MMM2__defaults__1" in folder.name else 1))
    (sweep / "qmix__MMM2__defaults__3" / "log.txt").write_text(
        "SMAClite physics: numpy RVO2, fast path (docs)\n"
    )
    assert hard_maps.main([str(sweep), "--out", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    mmm2, lstm = (line for line in out.splitlines() if line.startswith("| `MMM2`"))
    assert "| `qmix_lstm` | 1 of 3 | - (0/1) | 0.00 | - | 20 min |" in lstm
    assert (
        "| 3 of 3 | 14,000 [13,000, 15,000] (2/3) |" in mmm2 and "| 14 min | 100% / 100% |" in mmm2
    )
    assert (
        f"| {np.mean([0.9, 1.0, 0.2]):.2f} [" in mmm2
    )  # final: the last 10 evaluations' mean per seed
    corridor = next(line for line in out.splitlines() if line.startswith("| `corridor`"))
    assert "| `qmix_memefficient` | 1 of 3 | 10,000 (1/1) |" in corridor
    assert (
        "Under way: `corridor` seed 2 at 4,000 steps (0.00 won over its last 10 evaluations)."
        in out
    )
    assert "--scripts qmix_memefficient --envs corridor --seeds 1-3" in out
    assert (
        "printed it: C++ RVO2, fast path (5 of 6 runs); numpy RVO2, fast path (1 of 6 runs)." in out
    )
    for command in (
        out.split("```bash\n")[1].split("```")[0].splitlines()
    ):  # each row's command, as the sweep reads it
        argv = shlex.split(command)[3:]
        assert (
            cleanmarl_sweep.main([*argv[: argv.index("--")], "--print", *argv[argv.index("--") :]])
            == 0
        )
    assert (
        "IQM of the best checkpoints' win rate, `qmix`, over `MMM2`, `corridor` (seeds 1): 0.950, one seed per map: no CI."
        in out
    )  # seed 1: the one both finished
    assert {"curves.png", "aggregate.png", "table.md", "summary.md"} <= {
        p.name for p in (tmp_path / "img").iterdir()
    }
    assert out.strip() == (tmp_path / "img" / "table.md").read_text().strip()
    home = (tmp_path / "img" / "summary.md").read_text()
    assert (
        "| [`corridor`](smaclite_hard_maps.md) | `qmix_memefficient` | 1 of 3 | 10,000 (1/1) | - | 100% / 100% |"
        in home
    )


def test_hard_maps_aggregate_is_the_largest_grid_of_maps_that_finished_the_same_seeds():
    """rliable's CI needs every seed on every map: a map finished on fewer seeds so far is left out of the aggregate
    rather than cutting every map down to its seeds; one map alone is an aggregate only where no two share a seed."""
    assert hard_maps.common_seeds(
        {"MMM2": {1, 2, 3}, "corridor": {1, 2, 3}, "10m_vs_11m": {1}}
    ) == (
        ["MMM2", "corridor"],
        [1, 2, 3],
    )
    assert hard_maps.common_seeds({"MMM2": {1, 2, 3}, "corridor": {1}}) == (
        ["MMM2", "corridor"],
        [1],
    )
    assert hard_maps.common_seeds({"MMM2": {1, 2}, "corridor": {2, 3}}) == (
        ["MMM2", "corridor"],
        [2],
    )
    assert hard_maps.common_seeds({"MMM2": {1, 2}, "corridor": {3}}) == (["MMM2"], [1, 2])
    assert hard_maps.common_seeds({}) == ([], [])


def test_hard_maps_keep_copies_the_finished_runs_records_only_and_the_table_reads_them(
    tmp_path, capsys
):
    """--keep copies what the report reads of each finished run (no checkpoint, no training state, no unfinished run),
    replaces a run kept before, and the table made from the kept folder is the sweep's own, the runs under way aside."""
    sweep, kept = tmp_path / "sweep", tmp_path / "kept"
    fake_run(sweep, "MMM2", 1, [0.0] * 5 + [1.0] * 10)
    fake_run(sweep, "MMM2", 2, [0.0] * 4, done=False)
    run_dir = next((sweep / "qmix__MMM2__defaults__1" / "runs").iterdir())
    (run_dir / "best").mkdir()
    for name, text in [("training_state.cleanmarl", "state"), ("best/best.cleanmarl_model", "weights"),
                       ("events.out.tfevents.1", "tb"), ("best/best.eval.json", json.dumps(dict(battle_won=[1.0] * 50))),
                       ("models.json", json.dumps(dict(best=dict(path="best/best.cleanmarl_model", step=15000))))]:  # fmt: skip
        (run_dir / name).write_text(text)
    log = "run directory: runs/x\nSMAClite physics: C++ RVO2, fast path (docs)\nstep 1000 return 0.0\nsweep: stopped\n"
    (sweep / "qmix__MMM2__defaults__1" / "log.txt").write_text(log)
    (kept / "qmix__MMM2__defaults__1" / "runs" / "old").mkdir(
        parents=True
    )  # kept by an earlier session: replaced
    assert hard_maps.main([str(sweep), "--out", str(tmp_path / "a")]) == 0
    direct = capsys.readouterr().out
    assert hard_maps.main([str(sweep), "--keep", str(kept), "--out", str(tmp_path / "b")]) == 0
    from_kept = capsys.readouterr().out
    files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    folder, runs = "qmix__MMM2__defaults__1", f"qmix__MMM2__defaults__1/runs/{run_dir.name}"
    assert files == sorted([f"{folder}/meta.json", f"{folder}/done", f"{folder}/log.txt", f"{runs}/evaluations.jsonl",
                            f"{runs}/models.json", f"{runs}/best/best.eval.json"])  # fmt: skip
    assert (
        kept / folder / "log.txt"
    ).read_text() == "SMAClite physics: C++ RVO2, fast path (docs)\nsweep: stopped\n"
    assert (
        "| `MMM2` | `qmix` | 1 of 3 | 14,000 (1/1) | 1.00 | 1.00 |" in from_kept
    )  # the re-evaluation was kept
    assert "Under way: `MMM2` seed 2" in direct and "Under way" not in from_kept
    rows = lambda text: [line for line in text.splitlines() if line.startswith("| `")]  # noqa: E731
    assert rows(direct) == rows(from_kept)
