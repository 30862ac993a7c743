"""benchmarks/redraw.py: every results table and figure of the docs and the README is the one its
records in benchmarks/results/ draw (CI runs --check on the committed store); --check names the first
table that differs; no record of the store is ignored by git."""

import importlib.util
import json
import shutil
import subprocess
import sys

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
    """The rule that once kept every evaluation out of the repository (`runs/` in .gitignore).
    A report read from the store (its `report/` folder) is output, not records: left out."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    store = ROOT / "benchmarks/results"
    files = [
        str(p.relative_to(ROOT))
        for p in store.rglob("*")
        if p.is_file() and p.relative_to(store).parts[1:2] != ("report",)
    ]
    found = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(files), cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert found.stdout == "", f"ignored by git: {found.stdout}"
    assert any(f.endswith("evaluations.jsonl") for f in files)


def test_each_kept_reevaluation_holds_the_episodes_its_sweep_asked_for():
    """A kept absolute.json is the sweep's re-evaluation of the best checkpoint, --num-eval-ep
    episodes (its kept log's last command): not a later, shorter --eval-only of it (a video's)."""
    kept = sorted((ROOT / "benchmarks/results").glob("*/*/absolute.json"))
    for path in kept:
        said = [
            line
            for line in (path.parent / "log.txt").read_text().splitlines()
            if line.startswith("sweep: the absolute metric:")
        ]
        asked = int(said[-1].split("--num-eval-ep ")[1].split()[0])
        episodes = len(json.loads(path.read_text())["returns"])
        assert episodes == asked, (
            f"{path.parent.name}: {episodes} episodes, the sweep asked {asked}"
        )
    assert kept


PEER = """import argparse, time
parser = argparse.ArgumentParser()
for flag in ("--env-type", "--env-name", "--total-timesteps"):
    parser.add_argument(flag)
time.sleep(int(parser.parse_args().total_timesteps) * 1e-4)  # 10,000 steps/s, start-up apart
"""


def test_a_throughput_record_names_the_peer_by_its_checkout_and_draws_its_ratios(tmp_path):
    """benchmarks/throughput.py --record, with a stand-in peer that runs at 10,000 steps/s: the
    record's command names the peer's checkout, not the path it had here, and redraw's table and
    speed line state the ratios of the recorded rates."""
    peer = tmp_path / "somewhere" / "PeerRL" / "qmix.py"
    peer.parent.mkdir(parents=True)
    peer.write_text(PEER)
    record = tmp_path / "defaults.json"
    flags = ["--steps", "600", "--raw-seconds", "0.2", "--peer-steps", "5000", "--peer", str(peer)]
    flags += ["--peer-name", "Peer", "--peer-repo", "https://example.org/peer", "--record"]
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), *flags, str(record)]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    found = json.loads(record.read_text())
    assert "<Peer checkout>/PeerRL/qmix.py" in found["command"]
    assert str(peer) not in found["command"]
    assert found["peer"]["sps"] > 0 and found["qmix"]["sps"] > 0  # rates on a loaded machine vary
    redraw.draw_throughput(tmp_path, tmp_path)
    raw = (found["raw_before"] + found["raw_after"]) / 2
    ratio = found["qmix"]["sps"] / found["peer"]["sps"]
    table = (tmp_path / "table.md").read_text()
    assert f"| **`qmix.py` / [Peer](https://example.org/peer)** | **{ratio:.1f}x** |" in table
    assert f"| **{found['qmix']['sps'] / raw:.2f}** |" in table
    line = (tmp_path / "summary.md").read_text()
    assert f"{ratio:.1f}x the `qmix.py` of [Peer](https://example.org/peer) (a separate" in line


def test_a_variant_row_names_the_flags_of_both_scripts_and_the_gpu_it_ran_on(tmp_path):
    """draw_variants: each record's row shows the flags both scripts ran with, the variant's own,
    and the machine with its GPU where the record names one (throughput.py's gpu_name)."""
    base = dict(env="E", steps=100, variant="qmix_lstm.py", command="c")
    base["machine"] = dict(cpu="CPU X", arch="x86_64", cores=16)
    cpu = dict(base, qmix_args="--hidden-dim 256", variant_args="", gpu=None)
    cpu["speeds"] = {"qmix.py": [400.0], "qmix_lstm.py": [100.0]}
    cuda = dict(cpu, variant_args="--device cuda", gpu="GPU Y")
    cuda["speeds"] = {"qmix.py": [400.0], "qmix_lstm.py": [1000.0]}
    for name, record in (("a", cpu), ("b", cuda)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    redraw.draw_variants(tmp_path, tmp_path)
    rows = (tmp_path / "qmix_lstm.md").read_text().splitlines()
    assert (
        "| `E` | `--hidden-dim 256` | defaults | 100 | 400 | **0.250** | CPU X (16 cores) |" in rows
    )
    assert "| `E` | `--hidden-dim 256` | `--device cuda` | 1,000 | 400 | **2.500** |" in rows[3]
    assert rows[3].endswith("| CPU X (16 cores), GPU Y |")
    spec = importlib.util.spec_from_file_location("tp", ROOT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    assert throughput.gpu_name("--batch-size 8 --device cpu") is None
    assert throughput.gpu_name("--batch-size 8") is None


def test_a_printed_table_is_kept_with_its_command_and_drawn_as_printed(tmp_path):
    """benchmarks/record.py keeps what a command printed (nothing when it fails or prints no
    table); draw_tables gives its tables, a blank line between two (none where a log line
    interrupted one), then the command."""
    record = [sys.executable, str(ROOT / "benchmarks" / "record.py"), "--store", str(tmp_path)]
    two = "print('a'); print('| x |'); print('|---|'); print('| 1 |'); print('log line'); "
    two += "print('| 2 |'); print('b'); print('| y |'); print('|---|')"
    subprocess.run([*record, "two", "--", "python", "-c", two], check=True, capture_output=True)
    for name, code in (("fails", "print('| x |'); raise SystemExit(3)"), ("none", "print(1)")):
        done = subprocess.run([*record, name, "--", "python", "-c", code], capture_output=True)
        assert done.returncode == 1 and not (tmp_path / f"{name}.json").exists()
    kept = json.loads((tmp_path / "two.json").read_text())
    assert kept["output"].startswith("a\n| x |\n|---|\n| 1 |\nlog line\n") and kept["machine"]
    redraw.draw_tables(tmp_path, tmp_path)
    drawn = (tmp_path / "two.md").read_text().splitlines()
    assert drawn[:7] == ["| x |", "|---|", "| 1 |", "| 2 |", "", "| y |", "|---|"]
    assert drawn[-1].startswith("Printed by `python -c ")
