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


spec = importlib.util.spec_from_file_location(
    "smaclite_maps", ROOT / "benchmarks" / "smaclite_maps.py"
)
smaclite_maps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(smaclite_maps)


def fake_run(store, env, seed, won, ended="completed", script="qmix.py", absolute=None, flags=""):
    """A run of the results store (benchmarks/results/README.md): meta.json, ended.json (ended None:
    a run under way, none), evaluations.jsonl, absolute.json (absolute: its win rate)."""
    folder = (
        store / f"{script[:-3]}__{env}__{flags.replace(' ', '_').strip('-') or 'defaults'}__{seed}"
    )
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(
        json.dumps(dict(script=script, env=env, flag_set=flags, seed=seed))
    )
    if ended:
        (folder / "ended.json").write_text(json.dumps(dict(ended=ended, step=1000 * len(won))))
    records = [dict(step=1000 * (k + 1), time=k, elapsed=60.0 * (k + 1), returns=[0.0], lengths=[1], battle_won=[w])
               for k, w in enumerate(won)]  # fmt: skip
    (folder / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if absolute is not None:
        (folder / "absolute.json").write_text(
            json.dumps(dict(battle_won=[absolute], returns=[0.0]))
        )
    return folder


def test_smaclite_maps_table_shows_each_seed_and_never_averages_stopped_and_full_runs(
    tmp_path, capsys, monkeypatch
):
    """Each seed's step to 90% (the stop rule's window), with the mean over those that got there, its
    range and k/n; the final win rate of full-length runs only (a stopped run says "stopped"); each
    seed's best checkpoint and wall time; a run under way named apart; PyMARL2's SC2 figure beside
    it; the aggregate naming its maps and leaving out the one that is no test."""
    store = tmp_path / "store"
    monkeypatch.setattr(smaclite_maps, "PER_MAP_FLAGS", {"2s_vs_1sc": "--gamma 0.995"})
    # windows: the first >= 0.9 ends at the 15th evaluation: step 15000; seed 2's at the 13th
    fake_run(store, "MMM2", 1, [0.0] * 5 + [0.8, 1.0] * 5, "stopped", absolute=1.0)
    fake_run(store, "MMM2", 2, [0.0] * 4 + [1.0] * 10, "stopped", absolute=0.9)
    fake_run(store, "MMM2", 3, [0.2] * 12, absolute=0.4)  # the full budget, never reached
    fake_run(store, "corridor", 1, [1.0] * 10, "stopped", "qmix_memefficient.py", absolute=1.0)
    fake_run(store, "corridor", 2, [0.0] * 4, None, "qmix_memefficient.py")
    fake_run(store, "2c_vs_64zg", 1, [1.0] * 10, "stopped", absolute=1.0)
    fake_run(store, "MMM2", 1, [0.0] * 20, script="qmix_lstm.py")  # another script: its own row
    # flags a script needs to fit the machine (MEMORY_FLAGS): planned, on the home and its page
    fake_run(store, "corridor", 1, [1.0] * 10, "stopped", "qmix_lstm.py", 0.9, "--buffer-size 2500")
    # a map's own flags: a row of its own after the defaults', in no aggregate
    fake_run(store, "MMM2", 1, [1.0] * 10, "stopped", absolute=1.0, flags="--gamma 0.995")
    for folder in store.iterdir():  # the line the runs print
        (folder / "log.txt").write_text("SMAClite physics: C++ RVO2, fast path (docs)\n")
    (store / "qmix__MMM2__defaults__3" / "log.txt").write_text("SMAClite physics: numpy RVO2 (x)\n")
    assert smaclite_maps.main([str(store), "--out", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `MMM2`")]
    (mmm2, lstm, flagged), (d_mmm2, d_lstm, d_flagged) = rows[:3], rows[3:]  # core, each seed
    assert (
        mmm2
        == "| `MMM2` | super hard | `qmix` | 14k (range 13k to 15k) (2/3) | 1.00 / 0.90 / 0.40 |"
    )
    assert flagged.endswith("| `qmix --gamma 0.995` | 10k (1/1) | 1.00 |")
    assert lstm.endswith("| `qmix_lstm` | - (0/1) | - |")
    assert d_mmm2 == (
        "| `MMM2` | `qmix` | 1 / 2 / 3 | 15k / 13k / never | stopped / stopped / 0.20 | 0.20 "
        "| 15 / 14 / 12 min | 69% | 100% / 100% |"
    )
    assert "| `qmix --gamma 0.995` | 1 | 10k | stopped | - |" in d_flagged
    assert "| `qmix_lstm` | 1 | never | 0.00 | 0.00 | 20 min |" in d_lstm
    rows = [line for line in out.splitlines() if line.startswith("| `corridor`")]
    corridor, d_corridor = rows[0], rows[len(rows) // 2]
    assert corridor == "| `corridor` | super hard | `qmix_memefficient` | 10k (1/1) | 1.00 |"
    assert d_corridor.endswith("| 1% | 100% / 100% |")  # the SMAC paper's, PyMARL2's
    assert "| [`2c_vs_64zg`](smaclite_notes.md#2c_vs_64zg) | hard |" in out  # linked to its notes
    assert (
        "Not in the table: `corridor` seed 2 under way at 4,000 steps"
        " (0.00 won over its last 10 evaluations)." in out
    )
    assert "--scripts qmix_memefficient --envs 25m 27m_vs_30m bane_vs_bane corridor --seeds" in out
    assert "Not run yet (19 of 22 maps): `2s_vs_1sc`, `2s3z`," in out
    assert "C++ RVO2, fast path (8 of 9 runs); numpy RVO2 (1 of 9 runs)." in out
    assert '--scripts qmix --envs 2s_vs_1sc --seeds 1-3 --set "--gamma 0.995" --out' in out
    # every row's runs have their command: a probe's flags on its map and seeds, the plan's not twice
    assert '--scripts qmix --envs MMM2 --seeds 1 --set "--gamma 0.995" --out' in out
    assert out.count("--scripts qmix_lstm ") == 2 and out.count("--scripts qmix_memefficient ") == 1
    assert (
        out.count('--scripts qmix_lstm --envs corridor --seeds 1-3 --set "--buffer-size 2500"') == 1
    )
    assert [smaclite_maps.seed_list(s) for s in ([1], [4, 5], [1, 2, 3], [1, 4, 5])] == [
        "1",
        "4-5",
        "1-3",
        "1 4 5",
    ]
    for command in out.split("```bash\n")[1].split("```")[0].splitlines():  # as the sweep reads it
        argv = shlex.split(command)[3:]
        assert (
            cleanmarl_sweep.main([*argv[: argv.index("--")], "--print", *argv[argv.index("--") :]])
            == 0
        )
    assert "`qmix --gamma 0.995`, over" not in out  # never aggregated
    aggregate = next(line for line in out.splitlines() if line.startswith("IQM"))
    assert "over 2 runs: `MMM2`, `corridor`, seeds 1: 1.000" in aggregate  # seed 1: both ended
    # one seed a map: the range of the runs, no interval
    assert "1.000 (the runs' range 1.000 to 1.000; an interval needs 5 seeds a map)" in aggregate
    assert "CI" not in aggregate
    assert "left out: `2c_vs_64zg` (a random policy wins it on SMAClite)." in aggregate
    assert {p.name for p in (tmp_path / "img").iterdir()} == {
        "curves.png",
        "table.md",
        "summary.md",
        "headline.md",
        "qmix_lstm.md",
        "qmix_memefficient.md",
    }
    # the home page's first screen: the maps qmix wins on every seed, here none with 3 ended runs
    headline = (tmp_path / "img" / "headline.md").read_text()
    assert "reaches 90% won on every seed (3 or more)" in headline and "**0 of the" in headline
    # a variant's page: its rows and qmix's on the same maps, at the defaults; no other map
    lstm_page = (tmp_path / "img" / "qmix_lstm.md").read_text()
    assert "| [`MMM2`](smaclite.md) | `qmix_lstm` | never (0/1) |" in lstm_page
    assert "| [`MMM2`](smaclite.md) | `qmix` | 15k / 13k / never (2/3) |" in lstm_page
    assert "0.995" not in lstm_page and "2c_vs_64zg" not in lstm_page
    assert "| `qmix_lstm --buffer-size 2500` | 10k (1/1) | 0.90 |" in lstm_page
    assert "| [`corridor`](smaclite.md) | `qmix_memefficient` | 10k (1/1) | 1.00 |" in lstm_page
    memefficient_page = (tmp_path / "img" / "qmix_memefficient.md").read_text()
    assert "| [`corridor`](smaclite.md) | `qmix_memefficient` | 10k (1/1) |" in memefficient_page
    assert "MMM2" not in memefficient_page
    assert out.strip() == (tmp_path / "img" / "table.md").read_text().strip()
    home = (tmp_path / "img" / "summary.md").read_text()
    assert "0.995" not in home  # MMM2's flags are no PER_MAP_FLAGS: on the page's table only
    assert "| [`corridor`](smaclite.md) | `qmix_lstm --buffer-size 2500` | 10k (1/1) |" in home
    assert (
        "| [`MMM2`](smaclite.md) | `qmix` | 15k / 13k / never (2/3) | 1.00 / 0.90 / 0.40 |" in home
    )


def test_smaclite_maps_aggregate_is_the_largest_grid_of_maps_that_finished_the_same_seeds():
    """rliable's CI needs every seed on every map: a map finished on fewer seeds so far is left out of the aggregate
    rather than cutting every map down to its seeds; one map alone is an aggregate only where no two share a seed."""
    assert smaclite_maps.common_seeds(
        {"MMM2": {1, 2, 3}, "corridor": {1, 2, 3}, "10m_vs_11m": {1}}
    ) == (
        ["MMM2", "corridor"],
        [1, 2, 3],
    )
    assert smaclite_maps.common_seeds({"MMM2": {1, 2, 3}, "corridor": {1}}) == (
        ["MMM2", "corridor"],
        [1],
    )
    assert smaclite_maps.common_seeds({"MMM2": {1, 2}, "corridor": {2, 3}}) == (
        ["MMM2", "corridor"],
        [2],
    )
    assert smaclite_maps.common_seeds({"MMM2": {1, 2}, "corridor": {3}}) == (["MMM2"], [1, 2])
    assert smaclite_maps.common_seeds({}) == ([], [])


def test_smaclite_maps_count_pools_memefficient_with_qmix_and_names_each_map(monkeypatch):
    """Issue 46's count: qmix_memefficient's maps count as qmix's (the same QMIX); qmix_lstm is
    counted over the maps it runs on; a map on fewer than 3 ended runs is named, not counted; a
    flagged line is no count of its own."""

    def line(env, script, reached_mean, done=3):
        return dict(env=env, script=script, reached_mean=reached_mean, done=done)

    table = [
        line("3m", "qmix", "81k [71k, 96k] 95% CI (5/5)", done=5),
        line("2c_vs_64zg", "qmix", "29k (range 29k to 29k) (3/3)"),
        line("3s_vs_5z", "qmix", "1,567k (range 1,325k to 1,810k) (2/3)"),
        line("corridor", "qmix_memefficient", "300k (range 200k to 400k) (3/3)"),
        line("MMM2", "qmix", "200k (range 145k to 255k) (2/2)", done=2),  # under way: short
        line("2s_vs_1sc", "qmix_lstm", "396k (range 302k to 470k) (3/3)"),
        line("2s_vs_1sc", "qmix --gamma 0.995", "1,161k (range 855k to 1,387k) (3/3)"),
    ]
    monkeypatch.setattr(smaclite_maps, "RECURRENT", ("2s_vs_1sc", "3s_vs_5z", "MMM2"))
    qmix, lstm = smaclite_maps.solved(table).strip().split("\n\n")
    assert qmix.startswith(
        "`qmix` at its defaults (`qmix_memefficient` on `25m`, `27m_vs_30m`, `bane_vs_bane`,"
        " `corridor`) reaches 90% won on 3 of 3 seeds within 2M steps on 3 of the 22 maps"
        " (`2c_vs_64zg`, `corridor`, `3m`), `2c_vs_64zg` among them no test (a random policy wins"
        " it on SMAClite); not on every seed on 1 (`3s_vs_5z`);"
    )
    assert "fewer than 3 ended runs on 18 (`2s_vs_1sc`, `2s3z`," in qmix and "`MMM2`" in qmix
    assert lstm == (
        "`qmix_lstm` at its defaults reaches 90% won on 3 of 3 seeds within 2M steps on 1 of the 3"
        " maps it runs on (`2s_vs_1sc`); fewer than 3 ended runs on 2 (`3s_vs_5z`, `MMM2`)."
    )  # no map missed a seed: that clause is left out
    table += [line(m, "qmix_lstm", "400k (range 300k to 500k) (3/3)") for m in ("3s_vs_5z", "MMM2")]
    lstm = smaclite_maps.solved(table).strip().split("\n\n")[1]
    assert lstm.endswith("on 3 of the 3 maps it runs on (`2s_vs_1sc`, `3s_vs_5z`, `MMM2`).")


def test_keep_copies_the_ended_runs_records_only_and_the_table_reads_them(tmp_path, capsys):
    """report.keep copies what the tables read of each ended run of a sweep (no checkpoint, no
    training state, no run under way) into the store's layout, with how it ended and its own clock;
    a run kept before is replaced, and the table drawn from the store is the one drawn from the
    sweep's own folders."""
    from cleanmarl import report

    sweep, kept = tmp_path / "sweep", tmp_path / "kept"
    for seed, ended in (
        (1, '{"ended": "stopped", "step": 15000, "by": "--stop-at 0.9"}'),
        (2, None),
    ):
        folder = sweep / f"qmix__MMM2__defaults__{seed}"
        run_dir = folder / "runs" / f"MMM2__qmix__{seed}__1700000000"
        run_dir.mkdir(parents=True)
        (folder / "meta.json").write_text(
            json.dumps(dict(script="qmix.py", env="MMM2", flag_set="", seed=seed))
        )
        if ended:
            (folder / "done").write_text(ended)
        won = [0.0] * 5 + [1.0] * 10 if seed == 1 else [0.0] * 4
        records = [dict(step=1000 * (k + 1), time=k, elapsed=60.0 * (k + 1), returns=[0.0], lengths=[1],
                        battle_won=[w]) for k, w in enumerate(won)]  # fmt: skip
        (run_dir / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir := sweep / "qmix__MMM2__defaults__1" / "runs" / "MMM2__qmix__1__1700000000")
    (run_dir / "best").mkdir()
    for name, text in [("training_state.cleanmarl", "state"), ("best/best.cleanmarl_model", "weights"),
                       ("events.out.tfevents.1", "tb"), ("best/best.eval.json", json.dumps(dict(battle_won=[1.0] * 50))),
                       ("models.json", json.dumps(dict(best=dict(path="best/best.cleanmarl_model", step=15000))))]:  # fmt: skip
        (run_dir / name).write_text(text)
    log = "run directory: runs/x\nSMAClite physics: C++ RVO2 (docs)\nstep 1000 return 0.0\nsweep: stopped\n"
    (sweep / "qmix__MMM2__defaults__1" / "log.txt").write_text(log)
    (kept / "qmix__MMM2__defaults__1" / "old").mkdir(parents=True)  # kept before: replaced
    assert report.main([str(sweep), "--keep", str(kept)]) == 0
    folder = kept / "qmix__MMM2__defaults__1"
    assert sorted(p.name for p in kept.rglob("*")) == sorted(
        [folder.name, "meta.json", "ended.json", "evaluations.jsonl", "absolute.json", "log.txt"]
    )
    assert json.loads((folder / "ended.json").read_text()) == dict(
        ended="stopped", step=15000, by="--stop-at 0.9", wall_clock_s=900.0
    )
    assert (folder / "log.txt").read_text() == "SMAClite physics: C++ RVO2 (docs)\nsweep: stopped\n"
    assert smaclite_maps.main([str(sweep), "--out", str(tmp_path / "a")]) == 0
    direct = capsys.readouterr().out
    assert smaclite_maps.main([str(kept), "--out", str(tmp_path / "b")]) == 0
    from_kept = capsys.readouterr().out
    assert (
        "| `MMM2` | `qmix` | 1 | 14k | stopped | - | 15 min |" in from_kept  # its seed, kept
    )
    assert "`MMM2` seed 2 under way" in direct and "under way" not in from_kept
    rows = lambda text: [line for line in text.splitlines() if line.startswith("| `")]  # noqa: E731
    assert rows(direct) == rows(from_kept)


def test_crop_video_boxes_every_frame_s_units_and_nothing_of_the_background():
    """crop_video.battle_box: the box of what differs from the map and the area outside it, over
    all frames, grown by the margin and kept in the frame."""
    spec = importlib.util.spec_from_file_location("crop", ROOT / "benchmarks" / "crop_video.py")
    crop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crop)
    frames = np.zeros((3, 100, 120, 3), np.uint8) + np.uint8([180, 200, 210])  # outside the map
    frames[:, 20:80] = [215, 225, 225]  # the map
    frames[0, 30:33, 40:43] = [0, 160, 0]  # a unit at the first frame
    frames[2, 60:63, 90:95] = [220, 40, 60]  # another at the last
    assert crop.battle_box(frames, margin=5) == (25, 68, 35, 100)
    assert crop.battle_box(frames, margin=50) == (0, 100, 0, 120)
