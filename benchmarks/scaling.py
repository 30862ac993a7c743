"""Training steps/s of cleanmarl/qmix_multienvs.py at several --num-envs against qmix.py, side by side, per env.

    python benchmarks/scaling.py [--envs Foraging-8x8-2p-2f-coop-v3 simple_spread_v3 3m 2s3z] [--num-envs 1 2 4 8 16]
                                 [--steps 10000] [--smaclite-steps 3000] [--record benchmarks/results/scaling/NAME.json]

For each env, qmix.py runs first and then qmix_multienvs.py at each --num-envs, all at the defaults (only
--total-timesteps set), each in a fresh process; steps/s is the run's last charts/SPS (evaluation included). Envs that
cannot be built here (SMAClite not installed) are skipped with a line saying so. --record writes the rates, the
command and the machine to the results store, from which benchmarks/redraw.py draws the docs' table.
"""

import argparse
import importlib.util
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ROOT, qmix_steps_per_second  # noqa: E402

SMACLITE_MAPS = {"3m", "2s3z", "MMM", "MMM2", "8m", "27m_vs_30m"}

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--envs",
        nargs="+",
        default=["Foraging-8x8-2p-2f-coop-v3", "simple_spread_v3", "3m", "2s3z"],
    )
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=10_000, help="env steps of each run")
    parser.add_argument(
        "--smaclite-steps", type=int, default=3_000, help="env steps of each SMAClite run"
    )
    parser.add_argument(
        "--multienvs-flags", default="", help="flags for each qmix_multienvs.py run: '--overlap'"
    )
    parser.add_argument("--record", type=Path, help="write the rates to this JSON file")
    args = parser.parse_args()
    rows = []

    def record():  # after each row: a run cut short keeps the rows measured
        sys.path.insert(0, str(ROOT))
        from cleanmarl.sweep import machine, versions

        command = shlex.join(["python", "benchmarks/scaling.py", *sys.argv[1:]])
        record = dict(command=command, steps=args.steps, smaclite_steps=args.smaclite_steps)
        record.update(multienvs_flags=args.multienvs_flags)
        record.update(rows=rows, machine=machine(), versions=versions())
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")

    print(f"{'env':36s} {'script':28s} {'steps/s':>8s} {'/ qmix.py':>9s}", flush=True)
    for env_name in args.envs:
        if env_name in SMACLITE_MAPS and importlib.util.find_spec("smaclite") is None:
            print(f"{env_name:36s} skipped: smaclite is not installed", flush=True)
            continue
        steps = args.smaclite_steps if env_name in SMACLITE_MAPS else args.steps
        runs = [("qmix.py", [])] + [
            ("qmix_multienvs.py", ["--num-envs", str(n), *args.multienvs_flags.split()])
            for n in args.num_envs
        ]
        reference = None
        for script, extra in runs:
            with tempfile.TemporaryDirectory() as workdir:
                sps = qmix_steps_per_second(
                    steps, workdir, extra, ROOT / "cleanmarl" / script, ("--env-name", env_name)
                )
            reference = reference or sps
            label = script + (f" --num-envs {extra[1]}" if extra else "")
            print(f"{env_name:36s} {label:28s} {sps:8.0f} {sps / reference:9.2f}", flush=True)
            rows.append(dict(env=env_name, num_envs=int(extra[1]) if extra else None, sps=sps))
            if args.record:
                record()
