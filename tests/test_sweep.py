"""python -m cleanmarl.sweep and python -m cleanmarl.report on tiny grids: records, failures,
re-runs, Ray, the report."""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cleanmarl import report, sweep

LBF = "Foraging-8x8-2p-2f-coop-v3"
TINY = ["--", "--total-timesteps", "300", "--batch-size", "4", "--eval-steps", "2"]


def statuses(capsys):
    out = capsys.readouterr().out
    return out, out.strip().splitlines()


def test_a_tiny_grid_runs_records_reports_and_skips_what_is_done(tmp_path, capsys):
    """2 scripts x 2 seeds on LBF, and an env that does not exist: its runs fail, are reported with
    their last log line, and the others finish; a second sweep skips the finished ones; the report
    reads them all."""
    grid = [
        "--scripts",
        "qmix",
        "qmix_memefficient",
        "--envs",
        LBF,
        "no_such_env_v0",
        "--seeds",
        "1-2",
    ]
    code = sweep.main([*grid, "--out", str(tmp_path), "--workers", "2", *TINY])
    out, lines = statuses(capsys)
    assert code == 1 and "4 done, 0 skipped (finished before), 4 failed, of 8 runs" in out
    failed = [line for line in lines if "no_such_env_v0" in line and "failed (exit 1)" in line]
    assert len(failed) == 4 and all(
        "error:" in line for line in failed
    )  # the script's own one-line error
    bad = sorted(tmp_path.glob("*no_such_env_v0*"))  # each failure recorded, for the store
    assert len(bad) == 4 and all(report.ending(f)["ended"] == "failed" for f in bad)
    assert json.loads((bad[0] / "failed").read_text())["exit"] == 1
    for script in ("qmix", "qmix_memefficient"):
        for seed in (1, 2):
            folder = tmp_path / f"{script}__{LBF}__defaults__{seed}"
            meta = json.loads((folder / "meta.json").read_text())
            assert (
                (folder / "done").exists() and meta["seed"] == seed and "torch" in meta["versions"]
            )
            assert meta["git_commit"] and f"--seed {seed}" in (folder / "command.txt").read_text()
            assert (
                meta["machine"]["cpu"] and meta["machine"]["cores"] >= 1
            )  # a seed reproduces on one machine only
            (records,) = folder.glob("runs/*/evaluations.jsonl")
            evaluations = [json.loads(line) for line in records.read_text().splitlines()]
            assert len(evaluations) >= 3 and all(len(e["returns"]) == 5 for e in evaluations)
            ended = sweep.read_done(folder)  # how it ended, at which step
            assert ended.pop("seconds") > 0 and ended == dict(
                ended="completed", step=evaluations[-1]["step"]
            )
    old = tmp_path / f"qmix__{LBF}__defaults__1" / "done"
    old.write_text("12.5\n")  # an older sweep's `done`: the seconds alone
    assert sweep.read_done(old.parent) == {"seconds": 12.5}
    code = sweep.main([*grid, "--out", str(tmp_path), "--workers", "2", *TINY])
    out, _ = statuses(capsys)
    assert code == 1 and "0 done, 4 skipped (finished before), 4 failed" in out
    with pytest.raises(SystemExit, match="4 of the sweep's 8 runs cannot be used"):
        report.main([str(tmp_path)])  # the failed runs are missing seeds, each named
    named = [line for line in capsys.readouterr().err.splitlines() if "no_such_env_v0" in line]
    assert len(named) == 4 and all("the run failed (exit 1)" in line for line in named)
    assert report.main([str(tmp_path), "--allow-missing"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| no_such_env_v0 | qmix | 0 of 2 |" in md and "4 of 8 runs;" in md
    made = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.md", "table.csv", "marl_eval.json", "performance_profiles.png"} <= made
    assert f"curve_steps_{LBF}.png" in made and f"curve_time_{LBF}.png" in made
    exported = json.loads((tmp_path / "report" / "marl_eval.json").read_text())
    runs = exported["lbf"][LBF]["qmix"]
    assert set(runs) == {"run_1", "run_2"} and runs["run_1"]["step_0"]["step_count"] > 0
    # qmix_memefficient keeps qmix.py's arithmetic: the same seed evaluates to the same returns
    assert runs == exported["lbf"][LBF]["qmix_memefficient"]


def test_an_interrupted_run_is_continued_from_its_state(tmp_path, capsys):
    """A run without its `done` mark (stopped, preempted) continues from its training state with
    --resume: a longer --total-timesteps extends it."""
    grid = ["--envs", LBF, "--out", str(tmp_path)]
    assert sweep.main([*grid, *TINY]) == 0
    (folder,) = tmp_path.iterdir()
    (folder / "done").unlink()
    assert sweep.main([*grid, *TINY[:2], "600", *TINY[3:]]) == 0
    assert (
        "--resume runs/" in (folder / "command.txt").read_text()
        and json.loads((folder / "meta.json").read_text())["resumed"]
    )
    (records,) = folder.glob("runs/*/evaluations.jsonl")
    steps = [json.loads(line)["step"] for line in records.read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] >= 600 and len(list(folder.glob("runs/*"))) == 1


def test_print_and_index(tmp_path, capsys):
    """--print lists every combination's command (flag sets with and without values); --index runs
    one of them."""
    grid = [
        "--envs",
        LBF,
        "--seeds",
        "1-3",
        "--set",
        "",
        "--td-lambda 0",
        "--no-last-action",
        "--out",
        str(tmp_path),
    ]
    assert sweep.main([*grid, "--print", *TINY]) == 0
    out, lines = statuses(capsys)
    assert len(lines) == 9 and all("--total-timesteps 300" in line for line in lines)
    assert (
        sum("--td-lambda 0" in line for line in lines)
        == sum("--no-last-action" in line for line in lines)
        == 3
    )
    assert sweep.main([*grid, "--index", "4", *TINY]) == 0
    (folder,) = tmp_path.iterdir()
    assert folder.name == f"qmix__{LBF}__td-lambda_0__2".replace("td-lambda", "td_lambda")
    with pytest.raises(SystemExit, match="--index 9 not in"):
        sweep.main([*grid, "--index", "9", *TINY])


def test_ray_backend(tmp_path, capsys):
    """The same grid through a local Ray instance: each run a Ray task of --threads CPUs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code = sweep.main(
            ["--envs", LBF, "--seeds", "1-2", "--out", str(tmp_path), "--backend", "ray", *TINY]
        )
    finally:
        ray.shutdown()
    out, _ = statuses(capsys)
    assert code == 0 and "2 done, 0 skipped (finished before), 0 failed, of 2 runs" in out
    assert len(list(tmp_path.glob("*/runs/*/evaluations.jsonl"))) == 2


def test_the_reports_iqm_and_improvement_are_rliables():
    """On synthetic scores, the report's aggregate equals rliable called directly with the same
    random state."""
    from rliable import library as rly
    from rliable import metrics

    rng = np.random.default_rng(0)
    scores = {"a": rng.random((5, 3)), "b": rng.random((5, 3)) + 0.2}
    iqm = report.aggregate(scores, reps=500, seed=4)
    np.random.seed(
        4
    )  # rliable's stratified bootstrap draws from numpy's global generator, not from random_state
    points, intervals = rly.get_interval_estimates(
        scores,
        lambda x: np.array([metrics.aggregate_iqm(x)]),
        reps=500,
        random_state=np.random.RandomState(4),
    )
    for line in scores:
        assert iqm[line] == (points[line][0], intervals[line][0, 0], intervals[line][1, 0])
        assert iqm[line][0] == pytest.approx(metrics.aggregate_iqm(scores[line]))
    better = report.improvement(scores, reps=500, seed=4)
    assert better["b", "a"][0] == pytest.approx(
        metrics.probability_of_improvement(scores["b"], scores["a"])
    )
    mean, low, high = report.bootstrap_ci(scores["a"][:, 0])
    assert low <= mean <= high and mean == pytest.approx(scores["a"][:, 0].mean())


def test_the_aggregates_scores_are_normalised_per_env_except_a_win_rate():
    """normalised_finals: returns min-max normalised per env over every run's final score; a win
    rate kept as it is (a map every run wins stays 1.0, not 0)."""

    def run(env, line, seed, final):
        return dict(
            env=env, line=line, seed=seed, records=[{"returns": [final], "battle_won": [final]}]
        )

    runs = [
        run("a", "x", 1, 0.5),
        run("a", "y", 1, 1.0),
        run("b", "x", 1, 1.0),
        run("b", "y", 1, 1.0),
    ]
    by_return, envs = report.normalised_finals(runs, "return")
    assert (
        envs == ["a", "b"]
        and by_return["x"].tolist() == [[0.0, 0.0]]
        and by_return["y"].tolist() == [[1.0, 0.0]]
    )
    by_win_rate, _ = report.normalised_finals(runs, "battle_won")
    assert by_win_rate["x"].tolist() == [[0.5, 1.0]] and by_win_rate["y"].tolist() == [[1.0, 1.0]]


def test_the_best_checkpoint_is_kept_whichever_comes_second(tmp_path):
    """keep_best: the latest checkpoint is copied to best/ when its evaluation scores at least as
    high as every earlier one (the later of equals), whether the save (qmix.py) or the evaluation's
    record (qmix_multienvs) comes second; battle_won decides where the env reports it."""
    import torch

    from cleanmarl.utils.checkpoints import save_model
    from cleanmarl.utils.evaluations import record_evaluation

    net, path = torch.nn.Linear(2, 1), str(tmp_path / "qmix.cleanmarl_model")
    args = argparse_namespace()

    def best():
        models = json.loads((tmp_path / "models.json").read_text())
        saved = torch.load(tmp_path / models["best"]["path"], weights_only=False)
        return models["best"]["step"], saved["step"], saved["net"]["bias"].item()

    for step, returns, save_first in [
        (10, [1, 2], False),
        (20, [0, 0], True),
        (30, [1.5, 1.5], False),
        (40, [5], True),
    ]:
        net.bias.data.fill_(step)
        if save_first:
            save_model(path, {"net": net}, args, 1.0, step)
            record_evaluation(str(tmp_path), step, 0.0, returns, [1] * len(returns))
        else:
            record_evaluation(str(tmp_path), step, 0.0, returns, [1] * len(returns))
            save_model(path, {"net": net}, args, 1.0, step)
        expected = {10: 10, 20: 10, 30: 30, 40: 40}[step]  # 30 ties 10 at 1.5 and is later
        assert best() == (expected, expected, expected)
    battles = (
        tmp_path / "battles"
    )  # where the env reports battles, the win rate decides, not the return
    battles.mkdir()
    for step, returns, won in [(10, [20.0], [1.0]), (20, [30.0], [0.0])]:
        record_evaluation(str(battles), step, 0.0, returns, [1], won)
        save_model(str(battles / "qmix.cleanmarl_model"), {"net": net}, args, 1.0, step)
    best = json.loads((battles / "models.json").read_text())["best"]
    assert (best["step"], best["score"], best["metric"]) == (10, 1.0, "battle_won")


def argparse_namespace():
    import argparse

    return argparse.Namespace(seed=1)


def test_stop_at_and_the_absolute_metric(tmp_path, capsys, monkeypatch):
    """--stop-at ends a run (SIGTERM, state saved) once its last --stop-window evaluations reach the
    score, and it counts as finished; --absolute re-evaluates its best checkpoint with K x the
    episodes, which the report's table and marl-eval export carry; a finished run without the
    re-evaluation gets only that on a later sweep."""
    grid = ["--envs", LBF, "--out", str(tmp_path), "--stop-at", "0", "--stop-window", "3"]
    long = ["--", "--total-timesteps", "1000000", "--batch-size", "4", "--eval-steps", "2"]
    assert sweep.main([*grid, *long]) == 0  # no --absolute: no --save-model, no re-evaluation
    out, _ = statuses(capsys)
    assert "1 done (1 stopped early: --stop-at 0.0)" in out
    (folder,) = tmp_path.iterdir()
    assert "stopped by SIGTERM" in (folder / "log.txt").read_text() and (folder / "done").exists()
    assert len(list(folder.glob("runs/*/training_state.cleanmarl"))) == 1 and not list(
        folder.glob("runs/*/best")
    )
    steps = [
        json.loads(line)["step"]
        for line in next(folder.glob("runs/*/evaluations.jsonl")).read_text().splitlines()
    ]
    assert 3 <= len(steps) and steps[-1] < 1_000_000
    ended = sweep.read_done(folder)  # stopped, not completed, at its last evaluation
    assert ended.pop("seconds") > 0 and ended == dict(
        ended="stopped", step=steps[-1], by="--stop-at 0.0 over the last 3 evaluations"
    )
    (
        folder / "done"
    ).unlink()  # now with --absolute: --save-model joins the flags, and the run is continued...
    for path in folder.glob("runs/*"):
        path.rename(tmp_path / "old")
    (folder / "absolute.json").write_text('{"returns": [0.0]}')  # an earlier best's: dropped
    assert sweep.main([*grid, "--absolute", "3", *long]) == 0
    (run_dir,) = folder.glob("runs/*")
    models = json.loads((run_dir / "models.json").read_text())
    reevaluation = json.loads((run_dir / "best" / "qmix.eval.json").read_text())
    assert (
        models["best"]["path"] == "best/qmix.cleanmarl_model" and len(reevaluation["returns"]) == 15
    )
    assert json.loads((folder / "absolute.json").read_text()) == reevaluation  # the sweep's copy
    # a later --eval-only of the best checkpoint (one episode, for a video) rewrites the file beside
    # it; the report and the store read the sweep's copy
    best = str(run_dir / "best" / "qmix.cleanmarl_model")
    script = Path(sweep.__file__).parent / "qmix.py"
    evaluate = [
        sys.executable,
        str(script),
        "--eval-only",
        "--load-model",
        best,
        "--num-eval-ep",
        "1",
    ]
    subprocess.run(evaluate, check=True, capture_output=True, cwd=tmp_path)
    assert len(json.loads((run_dir / "best" / "qmix.eval.json").read_text())["returns"]) == 1
    report.keep(tmp_path, tmp_path / "store")
    kept = json.loads((tmp_path / "store" / folder.name / "absolute.json").read_text())
    assert kept == reevaluation
    stored = sorted((tmp_path / "store").rglob("*"))
    with monkeypatch.context() as m:  # a store folder's report goes to ./report/NAME, never into it
        (tmp_path / "cwd").mkdir()
        m.chdir(tmp_path / "cwd")
        assert report.main([str(tmp_path / "store")]) == 0
    assert sorted((tmp_path / "store").rglob("*")) == stored
    assert (tmp_path / "cwd" / "report" / "store" / "table.csv").exists()
    records = [
        json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()
    ]
    best_score = max(np.mean(r["returns"]) for r in records)
    assert (
        models["best"]["score"]
        == best_score
        == max(np.mean(r["returns"]) for r in records if r["step"] <= models["best"]["step"])
    )
    assert report.main([str(tmp_path)]) == 0
    row = next(csv_rows(tmp_path / "report" / "table.csv"))
    assert float(row["absolute"]) == pytest.approx(np.mean(reevaluation["returns"]))
    exported = json.loads((tmp_path / "report" / "marl_eval.json").read_text())["lbf"][LBF]["qmix"][
        "run_1"
    ]
    assert exported["absolute_metrics"]["return"] == reevaluation["returns"]
    (folder / "absolute.json").unlink()  # a finished run without it: only the re-evaluation runs
    (run_dir / "best" / "qmix.eval.json").unlink()
    log_lines = len((folder / "log.txt").read_text().splitlines())
    assert sweep.main([*grid, "--absolute", "3", *long]) == 0
    new = (folder / "log.txt").read_text().splitlines()[log_lines:]
    assert len(new) == 2 and "--eval-only" in new[0] and "eval over 15 episodes" in new[1]


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


def test_steps_to_a_threshold_and_the_progress_bars_steps(tmp_path):
    """report.steps_to: the first evaluation at which the window's mean reaches the threshold;
    sweep.steps_done: the step of a run's latest evaluation."""
    records = [{"step": 100 * k, "returns": [r]} for k, r in enumerate([0, 1, 0, 1, 1, 1, 0])]
    run = {"records": records, "steps": np.array([r["step"] for r in records])}
    assert report.steps_to(run, "return", 1.0, 1) == 100
    assert report.steps_to(run, "return", 1.0, 3) == 500
    assert report.steps_to(run, "return", 2 / 3, 3) == 300
    assert report.steps_to(run, "return", 1.0, 4) is None
    exact = [
        {"step": k, "returns": [r], "battle_won": [r]} for k, r in enumerate([0.8, 1.0, 1.0, 0.8])
    ]
    assert np.mean([0.8, 1.0, 1.0, 0.8]) < 0.9  # floating point: 0.8999999999999999
    assert report.steps_to({"records": exact, "steps": np.arange(4)}, "battle_won", 0.9, 4) == 3
    assert (
        sweep.reached(exact, 0.9, 4)
        and not sweep.reached(exact, 0.95, 4)
        and not sweep.reached(exact[:3], 0.5, 4)
    )
    task = sweep.Run("qmix", LBF, "", 1, ())
    task_dir = tmp_path / task.name
    assert sweep.steps_done(task, tmp_path) == 0
    (tmp_path / task.name / "runs" / "r").mkdir(parents=True)
    (tmp_path / task.name / "runs" / "r" / "evaluations.jsonl").write_text(
        "\n".join(map(json.dumps, records)) + "\n"
    )
    assert sweep.steps_done(task, tmp_path) == 600
    with open(tmp_path / task.name / "runs" / "r" / "evaluations.jsonl", "a") as f:
        f.write('{"step": 700, "retu')  # a write cut short: left out, with a warning
    assert sweep.steps_done(task, tmp_path) == 600 and len(sweep.evaluations(task_dir)) == 7


def test_a_run_under_way_in_another_process_is_left_alone(tmp_path, capsys):
    """The run folder's lock is held by the sweep and inherited by the run's own process: with the
    sweep killed and its run still going (as when a sweep is restarted while a stopped run saves its
    state), a second sweep leaves that run alone instead of resuming it from an older state beside
    it; once the run has ended, the folder is free."""
    grid = [
        "--envs",
        LBF,
        "--out",
        str(tmp_path),
        "--",
        "--total-timesteps",
        "1000000",
        "--eval-steps",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(sweep.ROOT.parent)}
    first = subprocess.Popen(
        [sys.executable, "-m", "cleanmarl.sweep", *grid], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("*/runs/*/evaluations.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    first.kill()  # the sweep only: its run goes on, holding the inherited lock
    first.wait()
    (folder,) = tmp_path.iterdir()
    (pid,) = [
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and cwd(p) == str(folder)
    ]
    try:
        # --stop-at: were the run (wrongly) started again here, it would stop at the first poll
        # instead of running on
        assert (
            sweep.main(
                grid[:4] + ["--workers", "1", "--stop-at=-1e9", "--stop-window", "1"] + grid[4:]
            )
            == 0
        )
        out, _ = statuses(capsys)
        assert "1 under way in another process (left alone)" in out
        assert not json.loads((folder / "meta.json").read_text())[
            "resumed"
        ]  # written by the first sweep only
    finally:
        os.kill(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)
    with open(folder / "lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the run's process is gone


def cwd(proc):
    try:
        return os.readlink(proc / "cwd")
    except OSError:
        return None


def test_the_report_reads_the_run_the_sweep_continues_and_its_own_clock(tmp_path):
    """A combination's folder can hold an older run directory (a run killed before its first
    training state; the sweep then began anew): the report reads only the newest, as the sweep does,
    and its wall time is the records' `elapsed` (the run's own clock over its resumes), not the
    calendar between the first and the last record."""
    folder = tmp_path / sweep.Run("qmix", LBF, "", 1, ()).name
    meta = dict(script="qmix.py", env=LBF, flag_set="", seed=1)
    (folder / "runs").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(meta))
    for name, scores in (
        ("x__qmix__1__1700000000", [0.0, 0.0, 0.0]),
        ("x__qmix__1__1700000500", [0.5, 1.0]),
    ):
        (folder / "runs" / name).mkdir()
        records = [
            dict(step=100 * (k + 1), time=1e9 + 1000 * k, elapsed=10.0 * (k + 1), returns=[s])
            for k, s in enumerate(scores)
        ]
        for record in records:
            record["lengths"] = [5]
        (folder / "runs" / name / "evaluations.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records)
        )
    (run,) = report.load(tmp_path)
    assert list(run["steps"]) == [100, 200] and report.scores(run, "return").tolist() == [0.5, 1.0]
    assert list(run["times"]) == [10.0, 20.0] and run["wall"] == 20.0


def test_a_signal_stops_the_sweep_and_the_same_command_continues_it(tmp_path):
    """SIGINT to the sweep's process group (a terminal's Ctrl-C): no run starts after it; the run
    under way, in a session of its own, gets one SIGTERM from the sweep (not the SIGINT too: two
    signals would end it without saving), saves its training state and is not marked done; the
    sweep says so in one line and exits 130. The same command then continues that run, its
    evaluations going on from where they stopped, and runs the others."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "cleanmarl.sweep", "--envs", LBF, "--seeds", "1-4"]
    argv += ["--workers", "1", "--out", str(out), "--", "--total-timesteps", "3000"]
    argv += ["--checkpoint-every", "0.003", "--eval-steps", "5"]
    env = {**os.environ, "PYTHONPATH": str(sweep.ROOT.parent)}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen(argv, cwd=tmp_path, env=env, start_new_session=True, **pipes)
    folder = out / f"qmix__{LBF}__defaults__1"
    deadline = time.time() + 120
    while first.poll() is None and time.time() < deadline:
        if list(folder.glob("runs/*/training_state.cleanmarl")) and sweep.evaluations(folder):
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGINT)  # the sweep's process group, as a terminal's Ctrl-C
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stdout + stderr
    said = [line for line in stdout.splitlines() if line.startswith("sweep: stopped")]
    assert said == [
        "sweep: stopped by SIGINT: 1 run stopped (resumable), 3 not started, 0 done, of 4 runs;"
        " the same command continues"
    ]
    assert [p.name for p in out.iterdir()] == [folder.name]  # seeds 2-4 never began
    assert list(folder.glob("runs/*/training_state.cleanmarl")) and sweep.read_done(folder) is None
    log = (folder / "log.txt").read_text()
    assert log.count("SIGTERM: stopping") == 1 and "SIGINT: stopping" not in log
    assert "stopped by SIGTERM at step" in log
    before = sweep.evaluations(folder)
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep: 4 done, 0 skipped (finished before), 0 failed, of 4 runs" in again.stdout
    assert all(sweep.read_done(p)["ended"] == "completed" for p in out.iterdir())
    assert "--resume runs/" in (folder / "command.txt").read_text()
    meta = json.loads((folder / "meta.json").read_text())  # the run's command, and how it resumed
    assert "--resume" not in meta["command"] and "--resume" in meta["resume_command"]
    assert len(list(folder.glob("runs/*"))) == 1
    after = sweep.evaluations(folder)
    steps = [r["step"] for r in after]
    assert after[: len(before)] == before and steps == sorted(set(steps)) and steps[-1] >= 3000
    assert max(np.diff(steps)) <= 5 * 50  # an evaluation every 5 episodes of at most 50 steps


def test_distinct_flag_sets_get_distinct_folders(tmp_path, capsys):
    """Flag sets whose readable names would be the same ("--clip-gradients -1" and "1" are both
    clip_gradients_1) get folders of their own, the one that could stand for another with a short
    hash; a name is the same in every process (no salted hash) and at most 80 characters for the
    flag set."""
    grid = ["--envs", LBF, "--set", "--clip-gradients -1", "--clip-gradients 1"]
    assert sweep.main([*grid, "--out", str(tmp_path), "--workers", "2", *TINY]) == 0
    out, _ = statuses(capsys)
    assert "2 done, 0 skipped (finished before), 0 failed, of 2 runs" in out
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert f"qmix__{LBF}__clip_gradients_1__1" in folders and len(folders) == 2
    flag_sets = {json.loads((tmp_path / f / "meta.json").read_text())["flag_set"] for f in folders}
    assert flag_sets == {"--clip-gradients -1", "--clip-gradients 1"}
    names = [
        sweep.Run("qmix", LBF, s, 1, ()).name for s in ("--clip-gradients -1", "", "--x " * 50)
    ]
    code = "from cleanmarl import sweep; "
    code += f"print(sweep.Run('qmix', {LBF!r}, '--clip-gradients -1', 1, ()).name)"
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(sweep.ROOT.parent), "PYTHONHASHSEED": seed}
        printed = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert printed.stdout.strip() == names[0]
    assert names[0] in folders and names[1] == f"qmix__{LBF}__defaults__1"
    assert len(names[2].split("__")[2]) == 80
    assert sweep.Run("qmix", LBF, "--td-lambda 0", 1, ()).name == f"qmix__{LBF}__td_lambda_0__1"


def test_without_file_locks_the_sweep_warns_once_and_runs(tmp_path, capsys, monkeypatch):
    """Where flock fails for want of file locks (ENOLCK, as on some cluster filesystems), the sweep
    says so in one warning line and runs without them."""

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(sweep.fcntl, "flock", flock)
    grid = ["--envs", LBF, "--seeds", "1-2", "--workers", "2", "--out", str(tmp_path)]
    assert sweep.main([*grid, *TINY]) == 0
    captured = capsys.readouterr()
    assert "2 done, 0 skipped (finished before), 0 failed, of 2 runs" in captured.out
    warned = [line for line in captured.err.splitlines() if "warning" in line]
    assert warned == [
        "sweep: warning: no file locks on this filesystem (No locks available): the run folders"
        " are not protected against a second sweep; run one sweep at a time over a directory here"
    ]
    assert all(sweep.read_done(p)["ended"] == "completed" for p in tmp_path.iterdir())


def test_one_line_errors_for_seeds_and_an_unreachable_ray_address(tmp_path):
    """--seeds that are not seeds, or an empty range, and a --ray-address where no Ray cluster
    answers: one line each, no traceback."""
    grid = ["--envs", LBF, "--out", str(tmp_path), "--seeds"]
    with pytest.raises(SystemExit, match=r"^sweep: error: --seeds x: 'x' is not a seed or a range"):
        sweep.main([*grid, "x"])
    with pytest.raises(SystemExit, match=r"^sweep: error: --seeds 3-1: 3-1 is an empty range"):
        sweep.main([*grid, "3-1"])
    assert not list(tmp_path.iterdir())
    pytest.importorskip("ray")
    argv = [sys.executable, "-m", "cleanmarl.sweep", *grid, "1", "--backend", "ray"]
    argv += ["--ray-address", "127.0.0.1:1"]
    quick = {"RAY_NUM_REDIS_GET_RETRIES": "1", "RAY_py_gcs_connect_timeout_s": "2"}
    quick["RAY_gcs_rpc_server_connect_timeout_s"] = "1"  # Ray tries for minutes by default
    env = {**os.environ, "PYTHONPATH": str(sweep.ROOT.parent), **quick}
    try:
        failed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("ray.init took over 30 s to fail here")
    assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
    (said,) = [line for line in failed.stderr.splitlines() if line.startswith("sweep:")]
    assert said.startswith("sweep: error: --ray-address 127.0.0.1:1: ")
