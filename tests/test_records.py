"""Records that survive a crash: a partial last line of evaluations.jsonl (a kill mid-write, a full
disk) is left out with one warning by every reader, and a rewrite of the records (a resume's purge)
is atomic: killed between its write and its rename, the previous file is whole."""

import json
import os
import subprocess
import sys

import pytest

from cleanmarl.utils import evaluations, layout
from tests.test_smoke import LBF, ROOT, run


def test_read_records_leaves_out_a_partial_last_line_with_one_warning(tmp_path, capsys):
    path = tmp_path / layout.EVAL_FILE
    path.write_text('{"step": 1, "returns": [1.0]}\n{"step": 2, "returns": [2.0]}\n{"step": 12')
    assert [r["step"] for r in layout.read_records(path)] == [1, 2]
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "warning" in line and "partial" in line
    good = '{"step": 1, "returns": [1.0]}\n'
    path.write_text(good + "not json\n" + good)  # damage inside the file is no cut write
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        layout.read_records(path)
    assert layout.read_records(tmp_path / "missing.jsonl") == []


def test_a_purge_killed_before_its_rename_leaves_the_records_whole(tmp_path, monkeypatch):
    path = tmp_path / layout.EVAL_FILE
    records = [{"step": s, "returns": [float(s)]} for s in (100, 200, 300)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = path.read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt  # the process dies between the write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluations.purge_records(str(tmp_path), 150)
    assert path.read_bytes() == before
    monkeypatch.undo()
    evaluations.purge_records(str(tmp_path), 150)
    assert [r["step"] for r in layout.read_records(path)] == [100]


def test_the_report_and_a_resume_read_past_a_partial_last_line(tmp_path):
    """A run whose records end in a cut line: cleanmarl.report reads it (one warning, no traceback),
    and --resume continues it."""
    folder = tmp_path / "qmix__lbf__defaults__1"
    folder.mkdir()
    flags = [*LBF, "--total-timesteps", "600", "--batch-size", "4", "--eval-steps", "2"]
    run(folder, *flags)
    (run_dir,) = (folder / "runs").iterdir()
    meta = dict(script="qmix.py", env=LBF[-1], flag_set="", seed=1)  # as cleanmarl.sweep writes it
    (folder / "meta.json").write_text(json.dumps(meta))
    with open(run_dir / layout.EVAL_FILE, "a") as f:
        f.write('{"step": 12')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cleanmarl.report", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "partial" in proc.stdout + proc.stderr
    resumed = run(folder, "--resume", str(run_dir.relative_to(folder)), "--total-timesteps", "900")
    assert "Traceback" not in resumed.stderr
    steps = [r["step"] for r in layout.read_records(run_dir / layout.EVAL_FILE)]
    assert steps == sorted(set(steps)) and steps[-1] >= 900
