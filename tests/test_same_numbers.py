"""A change of shape, not of learning: for the same seed, qmix.py, qmix_memefficient.py and qmix_lstm.py log the losses
and evaluations recorded in tests/data/same_numbers.json (written by `python -m tests.test_same_numbers --record`)."""

import json
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_smoke import LBF, ROOT, run

DATA = ROOT / "tests" / "data" / "same_numbers.json"
SCRIPTS = ("qmix.py", "qmix_memefficient.py", "qmix_lstm.py")
SHORT = ["--batch-size", "8", "--log-every", "2", "--eval-steps", "8", "--seed", "3"]
CASES = {
    "lbf": [*LBF, *SHORT, "--total-timesteps", "3000"],
    "mpe": ["--env-name", "simple_spread_v3", *SHORT, "--total-timesteps", "1500"],
    "lbf_options": [
        *LBF,
        *SHORT,
        "--total-timesteps",
        "2000",
        "--td-lambda",
        "0",
        "--no-double-q",
    ]
    + [
        "--clip-gradients",
        "10",
        "--polyak",
        "0.5",
        "--target-network-update-freq",
        "20",
    ],
}
TAGS = (
    "train/loss",
    "train/grads",
    "train/q_taken_mean",
    "train/target_mean",
    "rollout/ep_reward",
    "eval/ep_reward",
)


def logs(path):
    """tag -> [[step, value]] of the run under path/runs, and its evaluation records [[step, returns, lengths]]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (Path(path) / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = {tag: [[e.step, e.value] for e in events.Scalars(tag)] for tag in TAGS}
    records = [
        json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()
    ]
    return logged | {"records": [[r["step"], r["returns"], r["lengths"]] for r in records]}


def cpu():
    """The CPU's model name (Linux), which decides the last bits of float32 kernels' results."""
    info = Path("/proc/cpuinfo")
    names = (
        [
            line.split(":", 1)[1].strip()
            for line in info.read_text().splitlines()
            if line.startswith("model name")
        ]
        if info.exists()
        else []
    )
    return names[0] if names else "unknown"


def flat(values):
    """The numbers of nested lists, in order."""
    if isinstance(values, list):
        return [x for v in values for x in flat(v)]
    return [values]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("script", SCRIPTS)
def test_same_losses_and_evaluations_as_recorded(tmp_path, script, case):
    """Bit for bit on the CPU model the numbers were recorded on; on another one the float32
    kernels may round their last bits otherwise (PyTorch's reproducibility notes), so there every
    number must agree to a relative 1e-4, which any change to what is learned exceeds."""
    data = json.loads(DATA.read_text())
    expected = data[script][case]
    run(tmp_path, *CASES[case], script=ROOT / "cleanmarl" / script)
    got = logs(tmp_path)
    assert len(expected["train/loss"]) > 10 and len(expected["records"]) > 3
    for tag in expected:
        if cpu() == data["_cpu"][case]:  # the CPU model each case was recorded on
            assert got[tag] == expected[tag], (
                f"{script} {case}: {tag} differs from the recorded run"
            )
        else:
            assert flat(got[tag]) == pytest.approx(flat(expected[tag]), rel=1e-4, abs=1e-6), (
                f"{script} {case}: {tag} differs from the recorded run (another CPU: {cpu()})"
            )


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    recorded = {}
    for script in SCRIPTS:
        for case, flags in CASES.items():
            with tempfile.TemporaryDirectory() as tmp:
                run(Path(tmp), *flags, script=ROOT / "cleanmarl" / script)
                recorded.setdefault(script, {})[case] = logs(tmp)
            print(script, case, len(recorded[script][case]["train/loss"]), "losses", flush=True)
    DATA.write_text(json.dumps(recorded | {"_cpu": dict.fromkeys(CASES, cpu())}) + "\n")
