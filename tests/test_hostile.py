"""A stranger's run directory, a full disk and two resumes at once: every fault is one line on
stderr and a non-zero exit, nothing is written outside the run directory, and what was saved
before the fault stays whole (docs/runs.md, "Faults"). The report's and the sweep's faults:
test_report_faults.py."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from cleanmarl.utils import guard, layout
from cleanmarl.utils.evaluations import record_evaluation
from tests.test_resume import snapshot
from tests.test_smoke import LBF, ROOT, SCRIPT, run

STATE = layout.STATE_FILE
SHORT = [*LBF, "--total-timesteps", "600", "--batch-size", "4", "--eval-steps", "10"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A short finished qmix.py run with its training state and checkpoints (latest and best)."""
    path = tmp_path_factory.mktemp("saved")
    run(path, *SHORT, "--save-model")
    (run_dir,) = (path / "runs").iterdir()
    return run_dir


def copy_run(saved_run, tmp_path):
    """The saved run copied into tmp_path/work/runs/NAME, and a folder beside `work` that nothing
    may write into. -> (work, run_dir, outside)"""
    work, outside = tmp_path / "work", tmp_path / "outside"
    outside.mkdir()
    run_dir = work / "runs" / saved_run.name
    shutil.copytree(saved_run, run_dir)
    return work, run_dir, outside


def one_error_line(proc, script="qmix.py"):
    """The process failed with one line on stderr, from the script: -> that line"""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode not in (0, None) and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    return lines[0]


def tamper(run_dir, edit):
    """edit(state) on the saved training state, written back as a stranger would."""
    state = torch.load(run_dir / STATE, weights_only=True)
    edit(state)
    torch.save(state, run_dir / STATE)


@pytest.mark.parametrize("name", ["absolute", "dotdot", "symlink", "models_json"])
def test_a_tampered_state_is_refused_before_anything_is_written(saved_run, tmp_path, name):
    """File names read from the training state are data: an absolute name, a '..' or a symlink
    that leaves the run directory refuses the whole resume, and nothing is written anywhere."""
    work, run_dir, outside = copy_run(saved_run, tmp_path)
    target = {
        "absolute": str(outside / "pwned.sh"),
        "dotdot": "../../../outside/pwned.txt",
        "symlink": "escape/pwned.txt",
        "models_json": "best/qmix.cleanmarl_model",
    }[name]
    if name == "symlink":
        (run_dir / "escape").symlink_to(outside, target_is_directory=True)

    def edit(state):
        if name == "models_json":  # models.json's own names: what keep_best copies from
            state["models"]["models"]["latest"]["path"] = str(outside / "secret")
        else:
            state["models"]["files"][target] = b"echo pwned\n"

    tamper(run_dir, edit)
    before = snapshot(run_dir)
    proc = run(work, "--resume", str(run_dir.relative_to(work)), check=False)
    line = one_error_line(proc)
    assert "outside the run directory" in line or "outside" in line, line
    assert list(outside.iterdir()) == [] and snapshot(run_dir) == before
    assert sorted(p.name for p in work.iterdir()) == ["runs"]


def test_a_symlink_in_the_run_directory_that_leaves_it_is_refused(saved_run, tmp_path):
    """The run writes its own files by name: evaluations.jsonl made a link to a file elsewhere
    would have the run append to that file."""
    work, run_dir, outside = copy_run(saved_run, tmp_path)
    (outside / "victim").write_text("mine\n")
    (run_dir / layout.EVAL_FILE).unlink()
    (run_dir / layout.EVAL_FILE).symlink_to(outside / "victim")
    proc = run(
        work, "--resume", str(run_dir.relative_to(work)), "--total-timesteps", "900", check=False
    )
    assert "outside the run directory" in one_error_line(proc)
    assert (outside / "victim").read_text() == "mine\n"


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("batch_size", "abc", "--batch-size is 'abc': damaged"),
        ("hidden_dim", 7, "does not fit (q_network"),
        ("env_type", "nope", "--env-type is 'nope': damaged"),
    ],
)
def test_a_state_whose_flags_were_edited_is_refused_and_the_run_kept(
    saved_run, tmp_path, flag, value, message
):
    work, run_dir, _ = copy_run(saved_run, tmp_path)
    tamper(run_dir, lambda state: state["args"].update({flag: value}))
    before = snapshot(run_dir)
    proc = run(work, "--resume", str(run_dir.relative_to(work)), check=False)
    assert message in one_error_line(proc)
    assert snapshot(run_dir) == before


def test_a_state_whose_loop_was_edited_is_refused(saved_run, tmp_path):
    work, run_dir, _ = copy_run(saved_run, tmp_path)
    tamper(run_dir, lambda state: state["objects"]["loop"].update(global_step="600"))
    before = snapshot(run_dir)
    proc = run(work, "--resume", str(run_dir.relative_to(work)), check=False)
    assert "does not fit (loop: global_step" in one_error_line(proc)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "logs",
    [{"train/loss": ["0.5"]}, {"train/loss": [torch.tensor(1)]}, {"train/loss": []}, {7: [1.0]}],
    ids=["text", "integer_tensor", "empty", "tag_not_text"],
)
def test_a_state_whose_values_not_yet_logged_were_edited_is_refused(saved_run, tmp_path, logs):
    """What the run kept for its next log (Run.add) comes back only as Run.add keeps it: a text, an
    integer tensor (whose mean torch refuses), an empty list or a tag that is no text would end the
    resumed run's first log with a traceback."""
    work, run_dir, _ = copy_run(saved_run, tmp_path)
    tamper(run_dir, lambda state: state.update(logs=logs))
    before = snapshot(run_dir)
    resume = ["--resume", str(run_dir.relative_to(work)), "--total-timesteps", "800"]
    proc = run(work, *resume, check=False)
    assert "is damaged (logs)" in one_error_line(proc)
    assert snapshot(run_dir) == before


def test_a_second_resume_of_a_run_under_way_is_refused_naming_the_holder(saved_run, tmp_path):
    work, run_dir, _ = copy_run(saved_run, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    resume = [sys.executable, str(SCRIPT), "--no-progress-bar", "--resume", str(run_dir)]
    first = subprocess.Popen(
        [*resume, "--total-timesteps", "100000"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while "run directory" not in (first.stdout.readline() or "") and time.time() < deadline:
            assert first.poll() is None, first.stderr.read()
        second = run(work, "--resume", str(run_dir), "--total-timesteps", "100000", check=False)
        line = one_error_line(second)
        assert f"in use by process {first.pid}" in line, line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM  # the first ran on, then saved and stopped


def test_a_resume_on_a_read_only_file_system_is_one_line(saved_run, tmp_path):
    work, run_dir, _ = copy_run(saved_run, tmp_path)
    try:
        subprocess.run(
            ["mount", "--bind", "-o", "ro", str(work), str(work)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no bind mounts here (needs root and CAP_SYS_ADMIN)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(work)], check=True)
        proc = run(work, "--resume", str(run_dir.relative_to(work)), check=False)
        assert "cannot be written" in one_error_line(proc)
        new = run(work, *SHORT, check=False)  # a new run in a read-only working directory
        assert "cannot make a run directory in 'runs'" in one_error_line(new)
    finally:
        subprocess.run(["umount", str(work)], check=True)


def test_a_new_run_where_runs_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("a file where the folder goes")
    proc = run(tmp_path, *SHORT, check=False)
    assert "cannot make a run directory in 'runs'" in one_error_line(proc)


# A full disk: each file larger than LIMIT cannot be written (RLIMIT_FSIZE; Python ignores
# SIGXFSZ, so the write fails with EFBIG as on a full disk, and everything smaller is written).
LIMITED = """import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")"""


def run_limited(tmp_path, limit, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", LIMITED, str(limit), str(SCRIPT), "--no-progress-bar", *args]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def no_temporary_files(run_dir):
    return [p.name for p in run_dir.rglob("*.tmp")] == []


def test_a_full_disk_at_the_first_save_warns_runs_on_and_ends_non_zero(tmp_path):
    """The training state cannot be written from its first save on: one warning line each time,
    the run trains to its end, and its last line says that it cannot be resumed (exit 1)."""
    proc = run_limited(tmp_path, 200_000, *SHORT, "--save-model", "--checkpoint-every", "0.003")
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    warnings = [line for line in proc.stdout.splitlines() if "warning" in line]
    assert warnings and all(
        f"could not write {run_dir.relative_to(tmp_path)}/{STATE}" in w for w in warnings
    )
    error = one_error_line(proc)
    assert "no training state is the last saved" in error or "no training state" in error
    assert not (run_dir / STATE).exists() and no_temporary_files(run_dir)
    records = layout.read_records(run_dir / layout.EVAL_FILE)  # small files are all written
    assert records[-1]["step"] >= 600 and (run_dir / "qmix.cleanmarl_model").exists()


def test_a_full_disk_at_a_later_save_keeps_the_previous_state_which_resumes(tmp_path):
    proc = run_limited(
        tmp_path,
        1_000_000,
        *LBF,
        "--total-timesteps",
        "4000",
        "--batch-size",
        "4",
        "--eval-steps",
        "10",
        "--checkpoint-every",
        "0.003",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "could not write" in proc.stdout and "the previous one is kept" in proc.stdout
    assert "the training state could not be written: step" in one_error_line(proc)
    saved_step = torch.load(run_dir / STATE, weights_only=True)["step"]
    assert 0 < saved_step < 4000 and no_temporary_files(run_dir)
    again = run(tmp_path, "--resume", str(run_dir.relative_to(tmp_path)), check=False)
    assert again.returncode == 0, again.stderr[-3000:]  # with room again, it ends
    assert torch.load(run_dir / STATE, weights_only=True)["step"] >= 4000


def test_a_full_tmpfs_is_warned_about_and_loses_nothing_saved(tmp_path):
    """The disk itself fills (a 2 MB tmpfs): every file of the run, TensorBoard's too, meets it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        proc = run(
            disk,
            *LBF,
            "--total-timesteps",
            "6000",
            "--batch-size",
            "4",
            "--eval-steps",
            "10",
            "--save-model",
            "--checkpoint-every",
            "0.02",
            check=False,
        )
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr + proc.stdout
        (run_dir,) = (disk / "runs").iterdir()
        assert no_temporary_files(run_dir)
        if (run_dir / STATE).exists():  # whatever was saved is whole
            torch.load(run_dir / STATE, weights_only=True)
        layout.read_records(run_dir / layout.EVAL_FILE)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_for_tensorboard_is_one_warning_and_the_run_goes_on(tmp_path):
    """Every file above 6 KB fails: the event file soon (a log every episode: about 8 KB in all),
    and with it the writer's own thread; one warning line for it, no traceback, the records all
    written."""
    proc = run_limited(tmp_path, 6_000, *SHORT, "--log-every", "1")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert proc.stdout.count("could not write TensorBoard's logs") == 1, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert layout.read_records(run_dir / layout.EVAL_FILE)[-1]["step"] >= 600


def test_a_failed_append_cuts_no_line_and_the_next_evaluation_writes_it(tmp_path, monkeypatch):
    """An evaluation record that cannot be appended leaves no partial line and is written before
    the next one once the disk has room."""
    path = tmp_path / layout.EVAL_FILE
    assert record_evaluation(str(tmp_path), 10, 1.0, [1.0], [5]) == []
    real_write = os.write

    def full_disk(fd, data):  # 7 bytes reach the file, then the disk is full
        if fd > 2 and len(data) > 7:
            real_write(fd, bytes(data[:7]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    kept = record_evaluation(str(tmp_path), 20, 2.0, [2.0], [5])
    monkeypatch.undo()
    assert path.read_bytes().count(b"\n") == 1  # the file as it was, after its close too
    assert [r["step"] for r in kept] == [20]
    assert [r["step"] for r in layout.read_records(path)] == [10]  # no partial line
    assert record_evaluation(str(tmp_path), 30, 3.0, [3.0], [5], unwritten=kept) == []
    assert [r["step"] for r in layout.read_records(path)] == [10, 20, 30]


def test_a_zip_writer_error_is_a_failed_write(tmp_path, capsys, monkeypatch):
    """torch.save on a full disk raises RuntimeError from its zip writer, not OSError."""
    path = str(tmp_path / STATE)
    assert layout.atomic_save({"step": 1}, path)

    def zip_writer_fails(obj, f):
        f.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", zip_writer_fails)
    assert not layout.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert os.listdir(tmp_path) == [STATE]
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "could not write" in line and "previous one is kept" in line


@pytest.mark.parametrize("flag", ["--learning-rate inf", "--gamma nan", "--polyak -inf"])
def test_a_non_finite_float_flag_is_one_line(tmp_path, flag):
    name, value = flag.split()
    proc = run(tmp_path, *SHORT, name, value, check=False)
    assert f"{name} must be" in one_error_line(proc)
    assert not (tmp_path / "runs").exists()


def test_wandb_without_a_key_is_one_line_and_leaves_no_run_directory(tmp_path):
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_MODE": "online", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(SCRIPT), "--no-progress-bar", *SHORT, "--use-wnb"]
    proc = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert "--use-wnb: W&B did not start" in one_error_line(proc)
    assert list((tmp_path / "runs").iterdir()) == []


def test_sigterm_during_setup_says_so(tmp_path):
    """Stopped before training began (the env is built): a line saying that nothing was saved."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the signal lands while the script builds its env: make_env is slowed down to let it
    code = """import runpy, sys, time, cleanmarl.env as e
make = e.make_env
def slow(*a, **k):
    print("building", flush=True); time.sleep(30); return make(*a, **k)
e.make_env = slow
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")"""
    command = [sys.executable, "-c", code, str(SCRIPT), "--no-progress-bar", *SHORT]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "building"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: stopped before training began; nothing was saved" in err, err


def test_a_finished_run_ignores_a_late_stop_signal(tmp_path):
    """A Ctrl-C that lands while Python shuts down (its handlers restored to the default) would
    kill a finished run with exit 130: a finished run ignores stop signals once it has ended."""
    code = """import runpy, signal, sys
exit = sys.exit
def report(code=None):
    print("ignored at exit:", [signal.getsignal(s) == signal.SIG_IGN for s in (2, 15)])
    exit(code)
sys.exit = report
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")"""
    proc = run(tmp_path, *SHORT, code=code)
    assert "ignored at exit: [True, True]" in proc.stdout, proc.stdout


def test_no_run_layer_file_is_written_through_a_name_outside(tmp_path):
    """guard.inside: the one gate for a name read from a run's files."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "link").symlink_to(tmp_path)
    run_dir = str(tmp_path / "run")
    assert guard.inside(run_dir, "best/x.cleanmarl_model") == os.path.join(
        run_dir, "best/x.cleanmarl_model"
    )
    for name in ["/etc/passwd", "../x", "best/../../x", "link/x", "", None, 3, "a\0b"]:
        with pytest.raises(ValueError, match="outside the run directory"):
            guard.inside(run_dir, name)
    with contextlib.suppress(FileExistsError):
        os.symlink("/", tmp_path / "run" / "root")
    with pytest.raises(ValueError, match="outside the run directory"):
        guard.check_links(run_dir)


def test_records_whose_lines_are_not_evaluations_are_one_line(tmp_path):
    path = tmp_path / layout.EVAL_FILE
    good = json.dumps(dict(step=10, returns=[1.0], lengths=[3])) + "\n"
    for bad in [
        '{"step": 1, "returns": [1' + "0" * 400 + "]}",
        "[" * 100_000 + "]" * 100_000,
        '{"returns": [1.0]}',
        '{"step": "10", "returns": [1]}',
        "[1, 2]",
        '{"step": 1, "returns": []}',
        '{"step": 1, "returns": [1], "lengths": "x"}',
    ]:
        path.write_text(good + bad + "\n" + good)
        with pytest.raises(ValueError, match="line 2 is no evaluation record"):
            layout.read_records(path)


# docs/runs.md, "Faults": each row of its table and the tests behind it
FAULTS = {
    "a training state that names a file outside": [
        test_a_tampered_state_is_refused_before_anything_is_written
    ],
    "a symlink in the run directory": [
        test_a_symlink_in_the_run_directory_that_leaves_it_is_refused
    ],
    "a saved state whose flags, loop or values not yet logged were edited": [
        test_a_state_whose_flags_were_edited_is_refused_and_the_run_kept,
        test_a_state_whose_loop_was_edited_is_refused,
        test_a_state_whose_values_not_yet_logged_were_edited_is_refused,
    ],
    "a truncated or byte-flipped state": ["test_fuzz_loaders.py"],
    "a second `--resume`": [test_a_second_resume_of_a_run_under_way_is_refused_naming_the_holder],
    "a read-only file system": [
        test_a_resume_on_a_read_only_file_system_is_one_line,
        test_a_new_run_where_runs_cannot_be_made_is_one_line,
    ],
    "a full disk at a save": [
        test_a_full_disk_at_the_first_save_warns_runs_on_and_ends_non_zero,
        test_a_full_disk_at_a_later_save_keeps_the_previous_state_which_resumes,
        test_a_zip_writer_error_is_a_failed_write,
    ],
    "a full disk for an evaluation record": [
        test_a_failed_append_cuts_no_line_and_the_next_evaluation_writes_it
    ],
    "a full disk for TensorBoard": [
        test_a_full_disk_for_tensorboard_is_one_warning_and_the_run_goes_on,
        test_a_full_tmpfs_is_warned_about_and_loses_nothing_saved,
    ],
    "a run that ends without its last state": [
        test_a_full_disk_at_the_first_save_warns_runs_on_and_ends_non_zero
    ],
    "a non-finite float flag": [test_a_non_finite_float_flag_is_one_line],
    "`--use-wnb` without a W&B key": [
        test_wandb_without_a_key_is_one_line_and_leaves_no_run_directory
    ],
    "SIGTERM or Ctrl-C during setup": [test_sigterm_during_setup_says_so],
    "Ctrl-C as a finished run exits": [test_a_finished_run_ignores_a_late_stop_signal],
    "a sweep run the report cannot use": ["test_report_faults.py"],
    "a step recorded twice": ["test_report_faults.py"],
    "`report --out`, `report --keep` or `sweep --out`": ["test_report_faults.py"],
    "a sweep flag out of range": ["test_report_faults.py"],
    "a misspelled script flag": ["test_report_faults.py"],
    "`--backend ray` without `--ray-address`": ["test_report_faults.py"],
}


def test_each_fault_in_the_docs_table_has_its_test():
    text = (ROOT / "docs" / "runs.md").read_text().split("## Faults", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    rows = rows[1:]  # the header
    named = {row: [k for k in FAULTS if row.startswith(k)] for row in rows}
    assert all(len(keys) == 1 for keys in named.values()), named
    assert sorted(k for keys in named.values() for k in keys) == sorted(FAULTS)
    for tests in FAULTS.values():
        assert all(callable(t) or (ROOT / "tests" / t).exists() for t in tests)
