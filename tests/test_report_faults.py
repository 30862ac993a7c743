"""Hostile input to python -m cleanmarl.report and python -m cleanmarl.sweep: damaged or missing
records name their run in one line and are never left out silently; unwritable outputs, numeric
flags out of range and a misspelled script flag are one line each; a local Ray instance listens on
loopback only. A property-based fuzz of the report's loaders closes it."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanmarl import report, sweep

LBF = "Foraging-8x8-2p-2f-coop-v3"
TINY = ["--", "--total-timesteps", "300", "--batch-size", "4", "--eval-steps", "2"]
UNWRITABLE = Path("/sys/cleanmarl_cannot_write_here")  # refused even to root (sysfs)


def records(n=4, won=False):
    found = []
    for k in range(n):
        record = dict(step=100 * (k + 1), time=1e9 + k, elapsed=10.0 * (k + 1))
        record |= dict(returns=[0.1 * k, 0.2 * k], lengths=[5, 6])
        if won:
            record["battle_won"] = [0.0, 1.0]
        found.append(record)
    return found


def combination(out, seed=1, flag_set="", layout="sweep", evaluations=None, env=LBF):
    """One run of a sweep (its runs/<run>/ folder, `done`) or of the store (layout="store": its
    files in the folder, ended.json, absolute.json). -> the file holding its evaluations"""
    folder = out / sweep.Run("qmix", env, flag_set, seed, ()).name
    run_dir = folder if layout == "store" else folder / "runs" / f"x__qmix__{seed}__1700000000"
    run_dir.mkdir(parents=True)
    meta = dict(script="qmix.py", env=env, flag_set=flag_set, seed=seed, machine={"cores": 2})
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    ended = dict(ended="completed", step=400)
    (folder / ("ended.json" if layout == "store" else "done")).write_text(json.dumps(ended))
    if layout == "store":
        (folder / "absolute.json").write_text(json.dumps(dict(returns=[0.5] * 4, lengths=[5] * 4)))
    text = "".join(json.dumps(r) + "\n" for r in records()) if evaluations is None else evaluations
    (run_dir / "evaluations.jsonl").write_text(text)
    return run_dir / "evaluations.jsonl"


def refused(capsys, argv, tool=report):
    """Run a tool that must refuse: -> (its exit status, its stderr lines)"""
    with pytest.raises(SystemExit) as stopped:
        tool.main(argv)
    captured = capsys.readouterr()
    lines = captured.err + (stopped.value.code if isinstance(stopped.value.code, str) else "")
    return stopped.value.code, [line for line in lines.splitlines() if line.strip()]


def everything(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


# 1. A seed the report cannot use


def test_an_empty_evaluations_file_is_a_missing_seed_and_refused_unless_allowed(tmp_path, capsys):
    """Seed 2's records are empty: the report names the file and refuses (exit 1, nothing
    written); with --allow-missing it reports the other two, saying "2 of 3" wherever it counts
    seeds."""
    combination(tmp_path, 1)
    empty = combination(tmp_path, 2, evaluations="")
    combination(tmp_path, 3)
    code, lines = refused(capsys, [str(tmp_path)])
    assert code not in (0, None) and not (tmp_path / "report").exists()
    assert lines[0] == f"report: error: {empty}: empty (no evaluation record)"
    assert (
        lines[1].startswith("report: error: 1 of the sweep's 3 runs cannot be used")
        and len(lines) == 2
    )
    assert report.main([str(tmp_path), "--allow-missing"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("(2 of 3 runs: 1 left out)")
    assert captured.err.strip() == f"report: warning: {empty}: empty (no evaluation record)"
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"| {LBF} | qmix | 2 of 3 |" in md and "2 of 3 runs" in md and str(empty) in md
    row = next(csv_rows(tmp_path / "report" / "table.csv"))
    assert (row["seeds"], row["missing"]) == ("2", "1")


def test_every_unusable_run_is_named_and_a_line_without_any_shows_0_of_n(tmp_path, capsys):
    """Two lines; of the --td-lambda 0 line, one seed failed before its first evaluation, one has
    no meta.json (its folder named as the sweep names a combination): both named, the line shown
    as 0 of 2 with --allow-missing."""
    combination(tmp_path, 1)
    failed = tmp_path / sweep.Run("qmix", LBF, "--td-lambda 0", 1, ()).name
    (failed / "runs").mkdir(parents=True)
    meta = dict(script="qmix.py", env=LBF, flag_set="--td-lambda 0", seed=1)
    (failed / "meta.json").write_text(json.dumps(meta))
    (failed / "failed").write_text(json.dumps(dict(ended="failed", exit=1, last_line="boom")))
    never = tmp_path / sweep.Run("qmix", LBF, "--td-lambda 0", 2, ()).name
    never.mkdir()
    (never / "lock").write_text("")
    code, lines = refused(capsys, [str(tmp_path)])
    assert code not in (0, None) and len(lines) == 3
    assert lines[0] == (
        f"report: error: {failed}: no evaluations.jsonl (the run failed (exit 1): boom)"
    )
    assert lines[1].startswith(f"report: error: {never / 'meta.json'}: missing")
    assert report.main([str(tmp_path), "--allow-missing"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"| {LBF} | qmix --td-lambda 0 | 0 of 2 | - |" in md
    assert f"| {LBF} | qmix | 1 |" in md and "1 of 3 runs" in md


def test_a_duplicated_step_keeps_its_last_record_with_one_warning(tmp_path, capsys):
    """A step recorded twice (a resumed run's records): the last record of it is kept, one warning
    line names the file."""
    twice = records()
    again = dict(twice[1], returns=[9.0, 9.0])
    path = combination(tmp_path, evaluations="".join(json.dumps(r) + "\n" for r in [*twice, again]))
    (run,) = report.load(tmp_path)
    assert run["steps"].tolist() == [100, 200, 300, 400]
    assert report.scores(run, "return").tolist()[1] == 9.0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"report: warning: {path}: 1 step(s) recorded more than once (200)")


def damage(tmp_path, name, text):
    """A store run and a sweep run (seed 2) beside an intact seed 1, seed 2's `name` replaced by
    text (bytes or str). -> the damaged file"""
    layout = "store" if name in ("ended.json", "absolute.json") else "sweep"
    combination(tmp_path, 1, layout=layout)
    evaluations = combination(tmp_path, 2, layout=layout)
    folder = tmp_path / sweep.Run("qmix", LBF, "", 2, ()).name
    path = {
        "evaluations.jsonl": evaluations,
        "models.json": evaluations.parent / "models.json",
    }.get(name, folder / name)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


BAD = [
    (
        "evaluations.jsonl",
        '{"step": 1, "returns": [1], "lengths": [1], "elapsed": 1}\nxx\n{}\n',
        ": line 2 is not JSON",
    ),
    (
        "evaluations.jsonl",
        '{"returns": [1.0], "lengths": [1], "elapsed": 1}\n',
        ": line 1: no step",
    ),
    (
        "evaluations.jsonl",
        '{"step": "100", "returns": [1.0], "lengths": [1], "elapsed": 1}\n',
        ": line 1: step is '100', not an integer >= 0",
    ),
    (
        "evaluations.jsonl",
        '{"step": 1, "returns": ["a"], "lengths": [1], "elapsed": 1}\n',
        ": line 1: returns is ['a'], not a list of finite numbers",
    ),
    (
        "evaluations.jsonl",
        '{"step": 1, "returns": [NaN], "lengths": [1], "elapsed": 1}\n',
        ": line 1: returns is [nan]",
    ),
    (
        "evaluations.jsonl",
        '{"step": 1, "returns": [1.0], "lengths": [1.5], "elapsed": 1}\n',
        ": line 1: lengths is [1.5], not a list of integers >= 0",
    ),
    (
        "evaluations.jsonl",
        '{"step": 1, "returns": [1.0], "lengths": [1], "elapsed": "1"}\n',
        ": line 1: elapsed is '1', not a number",
    ),
    ("evaluations.jsonl", b'{"step": 1, "returns": [1.0\xff]}\n', ": not UTF-8"),
    ("meta.json", "{not json", ": not JSON (line 1, column 2)"),
    ("meta.json", b'{"script": "qmix.py\xff"}', ": not UTF-8 (byte 19)"),
    ("meta.json", "[1, 2]", ": not a JSON object"),
    (
        "meta.json",
        json.dumps(dict(script="qmix.py", env=LBF, flag_set="", seed="2")),
        ": seed is '2', not an integer >= 0",
    ),
    ("done", "{1: 2}", ": not JSON"),
    ("done", '{"ended": 5}', ": ended is 5, not completed or stopped or failed"),
    ("ended.json", '{"ended": "completed", ', ": not JSON"),
    ("absolute.json", '{"returns": "0.5"}', ": returns is '0.5', not a list of finite numbers"),
    ("absolute.json", "\x00\x01", ": not JSON"),
    ("models.json", "{", ": not JSON"),
    (
        "models.json",
        json.dumps(dict(best=dict(path="../../../../etc/passwd"))),
        ": best's path '../../../../etc/passwd' leaves the run directory",
    ),
]


@pytest.mark.parametrize("name, text, said", BAD, ids=[f"{n}:{s[2:30]}" for n, _, s in BAD])
def test_a_damaged_file_names_its_run_in_one_line(tmp_path, capsys, name, text, said):
    """Garbage mid-file, a record without step or of the wrong types, a meta.json that is not JSON,
    not UTF-8 or not an object, a damaged done/ended.json/absolute.json/models.json: one error line
    naming the file (and line), exit status 1, nothing written; --allow-missing reports seed 1."""
    path = damage(tmp_path, name, text)
    before = everything(tmp_path)
    code, lines = refused(capsys, [str(tmp_path)])
    assert code not in (0, None) and everything(tmp_path) == before
    assert lines[0].startswith(f"report: error: {path}{said}"), lines
    assert len(lines) == 2 and "1 of the sweep's 2 runs cannot be used" in lines[1]
    out = tmp_path / "out"  # a store folder's report would go to ./report/NAME
    assert report.main([str(tmp_path), "--allow-missing", "--out", str(out)]) == 0
    assert "(1 of 2 runs: 1 left out)" in capsys.readouterr().out and (out / "report.md").exists()


def test_battle_won_of_runs_without_battles_and_flags_out_of_range(tmp_path, capsys):
    """--metric battle_won over runs whose env reports no battles, --window 0, --threshold nan, a
    sweep_dir that is not a folder: one line each, exit status 1."""
    combination(tmp_path, 1)
    code, lines = refused(capsys, [str(tmp_path), "--metric", "battle_won"])
    assert code not in (0, None) and lines[0].endswith("__1: no battle_won")
    for flags, said in (
        (["--window", "0"], "report: error: --window 0: must be 1 or more"),
        (["--threshold", "nan"], "report: error: --threshold nan: must be a finite number"),
    ):
        assert refused(capsys, [str(tmp_path), *flags]) == (said, [said])
    said = f"report: error: {tmp_path / 'nowhere'}: not a directory"
    assert refused(capsys, [str(tmp_path / "nowhere")]) == (said, [said])


def test_keep_names_a_damaged_run_and_keeps_the_others(tmp_path, capsys):
    """--keep: a run whose records are damaged is named and not kept (exit status 1, or 0 with
    --allow-missing); the others are kept."""
    combination(tmp_path / "sweep", 1)
    bad = combination(tmp_path / "sweep", 2, evaluations="{}\n{}\n")
    store = tmp_path / "store"
    code, lines = refused(capsys, [str(tmp_path / "sweep"), "--keep", str(store)])
    assert code == "report: error: 1 ended runs not kept (named above)"
    assert lines[0] == f"report: error: {bad}: line 1: no step (not kept)"
    assert [p.name for p in store.iterdir()] == [sweep.Run("qmix", LBF, "", 1, ()).name]
    assert report.main([str(tmp_path / "sweep"), "--keep", str(store), "--allow-missing"]) == 0


def test_an_env_name_never_writes_outside_the_report(tmp_path, capsys):
    """meta.json's env names the curves' files: one that climbs out (../) stays a file name in the
    report folder."""
    combination(tmp_path / "sweep", 1, env="../../../escape")
    before = everything(tmp_path)
    assert report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "sweep" / "out")]) == 0
    made = set(everything(tmp_path)) - set(before)
    assert all(p.startswith("sweep/out") for p in made)
    assert "sweep/out/curve_steps_.._.._.._escape.png" in made


# 2. Outputs that cannot be written


def in_the_way(tmp_path):
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "below"


def unwritable(tmp_path, where):
    """A path that cannot be written: below a file, or in sysfs. -> (path, the OS error(s))"""
    if where == "sys" and not Path("/sys").is_dir():
        pytest.skip("no /sys here (not Linux)")
    if where == "file":
        return in_the_way(tmp_path), "Not a directory"
    return UNWRITABLE, ("Operation not permitted", "Permission denied")


@pytest.mark.parametrize("where", ["file", "sys"])
def test_an_unwritable_report_or_store_is_one_line(tmp_path, capsys, where):
    """report --out and report --keep where a file is in the way, or where nobody may write
    (sysfs): one line naming the path and the OS error, exit status 1."""
    target, error = unwritable(tmp_path, where)
    combination(tmp_path / "sweep", 1)
    for flag in ("--out", "--keep"):
        code, lines = refused(capsys, [str(tmp_path / "sweep"), flag, str(target)])
        (line,) = [line for line in lines if line.startswith("report: error")]
        assert line.startswith(f"report: error: cannot write {target}") and line.endswith(error)


@pytest.mark.parametrize("where", ["file", "sys"])
def test_an_unwritable_sweep_folder_is_one_line(tmp_path, capsys, where):
    """sweep --out where a file is in the way, or in sysfs: one line, exit status 1."""
    target, error = unwritable(tmp_path, where)
    code, lines = refused(capsys, ["--envs", LBF, "--out", str(target), *TINY], sweep)
    assert code == lines[0] and len(lines) == 1
    assert lines[0].startswith(f"sweep: error: --out {target}: cannot write there: ")
    assert lines[0].split(": cannot write there: ")[1].startswith(error)


def test_a_combination_folder_that_cannot_be_made_fails_that_run_alone(tmp_path, capsys):
    """A file where a combination's folder goes: that run fails with the OS error, which the
    sweep's summary names (exit status 1)."""
    name = sweep.Run("qmix", LBF, "", 1, ()).name
    (tmp_path / name).write_text("")
    assert sweep.main(["--envs", LBF, "--out", str(tmp_path), *TINY]) == 1
    out = capsys.readouterr().out
    assert f"  {name}: failed (cannot write {tmp_path / name}: File exists)" in out.splitlines()


# 3. The sweep's numeric flags


@pytest.mark.parametrize(
    "flag, value, said",
    [
        ("--threads", "0", "must be 1 or more"),
        ("--threads", "-2", "must be 1 or more"),
        ("--workers", "0", "must be 1 or more"),
        ("--stop-window", "0", "must be 1 or more"),
        ("--gpus", "-1", "must be 0 (none) or more"),
        ("--gpus", "inf", "must be 0 (none) or more"),
        ("--absolute", "-1", "must be 0 (none) or more"),
        ("--stop-at", "nan", "must be a finite score"),
    ],
)
def test_a_sweep_flag_out_of_range_is_one_line(tmp_path, capsys, flag, value, said):
    """--threads 0 (once a ZeroDivisionError) and every other numeric flag out of its range: one
    line, exit status 1, nothing made."""
    argv = ["--envs", LBF, "--out", str(tmp_path / "out"), "--print", flag, value, *TINY]
    code, lines = refused(capsys, argv, sweep)
    value = str(float(value)) if flag in ("--gpus", "--stop-at") else value
    assert lines == [f"sweep: error: {flag} {value}: {said}"] and code == lines[0]
    assert not (tmp_path / "out").exists()


def test_each_flag_out_of_range_gets_its_line(tmp_path, capsys):
    argv = ["--envs", LBF, "--out", str(tmp_path), "--threads", "0", "--stop-window", "0"]
    code, lines = refused(capsys, argv, sweep)
    assert lines == [
        "sweep: error: --threads 0: must be 1 or more",
        "sweep: error: --stop-window 0: must be 1 or more",
    ]


# 4. A misspelled flag passed through to the script


def test_a_misspelled_script_flag_is_reported_by_the_line_that_names_it(tmp_path, capsys):
    """--learning-rat after the sweep's --: the run fails with tyro's message (the line of its
    error box that names the option), not the box's bottom border."""
    argv = ["--envs", LBF, "--out", str(tmp_path), *TINY, "--learning-rat", "1e-3"]
    assert sweep.main(argv) == 1
    out = capsys.readouterr().out
    (failed,) = [line for line in out.splitlines() if "failed (exit" in line]
    assert failed.endswith("Unrecognized options: --learning-rat, 1e-3") and "╰" not in failed
    (folder,) = tmp_path.iterdir()
    said = json.loads((folder / "failed").read_text())["last_line"]
    assert said == "Unrecognized options: --learning-rat, 1e-3"


def test_last_line_joins_a_wrapped_message_and_keeps_a_plain_last_line(tmp_path):
    box = [
        "╭─ Unrecognized options ──────╮",
        "│ Unrecognized options: --a,  │",
        "│ --b                         │",
        "│ ─────────────────────────── │",
        "│ Arguments similar to --a:   │",
        "╰─────────────────────────────╯",
    ]
    (tmp_path / "log.txt").write_text("sweep: note\n" + "\n".join(box) + "\n")
    assert sweep.last_line(tmp_path) == "Unrecognized options: --a, --b"
    (tmp_path / "log.txt").write_text("step 1\nerror: no such env\n")
    assert sweep.last_line(tmp_path) == "error: no such env"


# 5. Ray's ports


def fake_ray(calls, ip="127.0.0.1"):
    ray = types.ModuleType("ray")
    ray.init = lambda **kwargs: calls.append(kwargs)
    ray.exceptions = types.SimpleNamespace(RayError=RuntimeError)
    ray.util = types.SimpleNamespace(get_node_ip_address=lambda: ip)
    return ray


def test_a_local_ray_instance_is_asked_for_loopback_and_no_dashboard(monkeypatch, capsys):
    """start_ray without --ray-address: ray.init on 127.0.0.1 (clusters off: Ray would otherwise
    turn it into the host's address), no dashboard unless --ray-dashboard; with --ray-address it
    connects there and asks for nothing else."""
    calls = []
    monkeypatch.setitem(sys.modules, "ray", fake_ray(calls))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    monkeypatch.setattr(os, "environ", environ)
    sweep.start_ray(None)
    assert calls[-1] == dict(
        address=None,
        ignore_reinit_error=True,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
    )
    assert environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    sweep.start_ray(None, dashboard=True)
    assert calls[-1]["include_dashboard"] is True
    del environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]
    sweep.start_ray("10.0.0.1:6379")
    assert calls[-1] == dict(address="10.0.0.1:6379", ignore_reinit_error=True, log_to_driver=False)
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in environ
    monkeypatch.setitem(sys.modules, "ray", fake_ray(calls, ip="192.0.2.7"))
    sweep.start_ray(None)
    assert "listens on 192.0.2.7, not on loopback only" in capsys.readouterr().err


LISTENING = """
import os, sys
from cleanmarl.sweep import start_ray
ray = start_ray(None)
gcs = ray.get_runtime_context().gcs_address
print(ray.util.get_node_ip_address(), gcs, *[n["NodeManagerAddress"] for n in ray.nodes()])
port = int(gcs.rsplit(":", 1)[1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            print("listen", local.rsplit(":", 1)[0])
ray.shutdown()
"""


def test_a_real_local_ray_instance_listens_on_loopback_only(tmp_path):
    """A local Ray instance started by the sweep: its node, its GCS address and the GCS port's
    listening socket are on 127.0.0.1 (IPv4, or IPv4 mapped into IPv6)."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(sweep.ROOT.parent)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", LISTENING],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("a local Ray instance took over 60 s to start here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    node, gcs, *nodes = proc.stdout.splitlines()[0].split()
    assert node == "127.0.0.1" and gcs.startswith("127.0.0.1:") and set(nodes) == {"127.0.0.1"}
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    listening = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("listen")]
    assert listening and set(listening) <= loopback, listening


# The fuzz: the report's loaders of meta.json, evaluations.jsonl, absolute.json and ended.json


FILES = ("meta.json", "evaluations.jsonl", "absolute.json", "ended.json")
WRONG = st.one_of(
    st.text(max_size=5), st.none(), st.lists(st.text(max_size=3), max_size=2), st.just({"a": {}})
)


def intact(folder):
    combination(folder, 1, layout="store")
    (run,) = report.load(folder)
    return run


def seen(run):
    """What the report reads of a run."""
    return (
        run["env"],
        run["line"],
        run["seed"],
        run["records"],
        run["absolute"],
        run["ended"]["ended"],
        run["times"].tolist(),
    )


def typed(text, name, data):
    """text with one field's value (of the object, or of one record) replaced by a wrong type."""
    if name == "evaluations.jsonl":
        lines = text.splitlines()
        k = data.draw(st.integers(0, len(lines) - 1))
        lines[k] = typed(lines[k], "", data)
        return "\n".join(lines) + "\n"
    found = json.loads(text)
    field = data.draw(st.sampled_from(sorted(found)))
    found[field] = data.draw(WRONG)
    return json.dumps(found)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FILES), how=st.sampled_from(["cut", "flip", "type"]), data=st.data())
def test_fuzz_damaged_files_give_the_intact_result_or_one_named_error(name, how, data):
    """Random truncations, byte flips and type changes of one file of an intact store run: the
    loaders give the intact run, a run whose every field checks out (a flipped digit is another
    valid number; a cut evaluations.jsonl keeps a prefix of the records, a cut last line left out
    with a warning), or one error line naming that file: never a traceback, never a write."""
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        folder = root / "store"
        expected = seen(intact(folder))
        (path,) = folder.glob(f"*/{name}")
        raw = path.read_bytes()
        if how == "cut":
            damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
        elif how == "flip":
            k = data.draw(st.integers(0, len(raw) - 1))
            damaged = raw[:k] + bytes([raw[k] ^ data.draw(st.integers(1, 255))]) + raw[k + 1 :]
        else:
            damaged = typed(raw.decode(), name, data).encode()
        path.write_bytes(damaged)
        before = [(p, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))]
        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            runs = report.load(folder)
        assert [(p, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))] == (
            before
        )
        lines = said.getvalue().splitlines()
        ours = [line for line in lines if line.startswith("report: ")]
        assert all(str(path) in line for line in lines)  # a cut last line's warning names it too
        if not runs:
            (line,) = ours
            assert line.startswith(f"report: warning: {path}: ") and line.endswith("(left out)")
            return
        (run,) = runs
        if seen(run) == expected:
            return
        if how == "type":  # a string for a string: another env or flag set, the rest the same
            assert name == "meta.json" and seen(run)[2:] == expected[2:]
        steps = run["steps"].tolist()
        assert steps == sorted(set(steps)) and all(isinstance(s, int) for s in steps)
        assert all(report.is_number(v) for r in run["records"] for v in r["returns"])
        if how == "cut":
            assert name == "evaluations.jsonl" and run["records"] == expected[3][: len(steps)]
            assert not ours


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)
