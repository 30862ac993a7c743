"""Docs that cannot drift: the Args reference is --help itself, every logged metric is documented,
and CI runs exactly the README's test command."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import gen_help  # noqa: E402


def test_args_reference_is_current():
    for script in gen_help.SCRIPTS:
        committed = (ROOT / "docs" / "args" / script.replace(".py", ".txt")).read_text()
        assert committed == gen_help.help_text(script), f"run python docs/gen_help.py ({script} --help changed)"


def test_every_logged_metric_is_documented():
    source = "".join(path.read_text() for path in (ROOT / "cleanmarl").glob("qmix*.py"))
    metrics = set(re.findall(r'"((?:rollout|train|eval|charts)/[A-Za-z_]+)"', source))
    assert {"train/loss", "eval/ep_reward", "charts/SPS"} <= metrics
    docs = (ROOT / "docs" / "qmix.md").read_text()
    missing = sorted(m for m in metrics if f"`{m}`" not in docs)
    assert not missing, f"metrics logged but not documented in docs/qmix.md: {missing}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^# README test command\n(.+)$", readme, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command.strip() in [line.strip() for line in ci if not line.lstrip().startswith("#")]
