"""Run a benchmark that prints a markdown table and keep what it printed as a record of the store.

    python benchmarks/record.py NAME -- python benchmarks/checkpoint_cost.py [its flags]

runs the command from the repository's root, shows its output as it comes, and writes
benchmarks/results/tables/NAME.json: the command, everything it printed, the machine (CPU, cores)
and the package versions. benchmarks/redraw.py draws docs/img/tables/NAME.md from it: the printed
tables, then the command and the machine. A command that fails writes nothing.
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "tables"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="the record's name: benchmarks/results/tables/NAME.json")
    parser.add_argument("--store", type=Path, default=STORE, help=argparse.SUPPRESS)  # tests
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the benchmark's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.name.replace("_", "").replace("-", "").isalnum():
        parser.error("give a NAME of letters, digits, '-' and '_', then -- and a command")
    run = [sys.executable if command[0] in ("python", "python3") else command[0], *command[1:]]
    process = subprocess.Popen(run, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait() != 0:
        sys.exit(f"record: error: the command exited with {process.returncode}; nothing written")
    if not any(line.startswith("|") for line in lines):
        sys.exit("record: error: the command printed no markdown table; nothing written")
    sys.path.insert(0, str(ROOT))
    from cleanmarl.sweep import machine, versions

    record = dict(command=shlex.join(command), output="".join(lines), machine=machine())
    record["versions"] = versions()
    args.store.mkdir(parents=True, exist_ok=True)
    (args.store / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"record: {args.store / args.name}.json")


if __name__ == "__main__":
    main()
