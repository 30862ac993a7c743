"""benchmarks/redraw.py: every results table and figure of the docs and the README is the one its
records in benchmarks/results/ draw (CI runs --check on the committed store); --check names the first
table that differs; no record of the store is ignored by git."""

import importlib.util
import json
import shutil
import subprocess

import pytest

from tests.test_smoke import ROOT

spec = importlib.util.spec_from_file_location("redraw", ROOT / "benchmarks" / "redraw.py")
redraw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(redraw)
pytest.importorskip("matplotlib")
pytest.importorskip("rliable")


def test_the_committed_tables_and_figures_are_the_ones_the_store_draws(capsys):
    assert redraw.main(["--check"]) == 0, capsys.readouterr().err


def copy_of_the_repository(tmp_path):
    for part in ("benchmarks/results", "docs/img"):
        shutil.copytree(ROOT / part, tmp_path / part)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    return tmp_path


def test_check_names_the_table_that_differs_and_a_figure_not_committed(tmp_path, capsys):
    root = copy_of_the_repository(tmp_path)
    assert redraw.main(["--check", "--root", str(root)]) == 0
    (run,) = (root / "benchmarks/results/lbf").glob("*__defaults__1")
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["returns"] = [0.0] * len(last["returns"])  # one evaluation of one seed changed
    (run / "evaluations.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    assert redraw.main(["--check", "--root", str(root)]) == 1
    assert "docs/img/lbf/table.md differs from its redrawing" in capsys.readouterr().err
    redraw.main(["--root", str(root)])  # redrawn: the check passes again
    assert redraw.main(["--check", "--root", str(root)]) == 0
    (root / "docs/img/smaclite/curves.png").unlink()
    assert redraw.main(["--check", "--root", str(root)]) == 1
    assert "docs/img/smaclite/curves.png is not committed" in capsys.readouterr().err


def test_no_record_of_the_store_is_ignored_by_git():
    """The rule that once kept every evaluation out of the repository (`runs/` in .gitignore)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    files = [
        str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks/results").rglob("*") if p.is_file()
    ]
    found = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(files), cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert found.stdout == "", f"ignored by git: {found.stdout}"
    assert any(f.endswith("evaluations.jsonl") for f in files)
