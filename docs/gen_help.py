"""Writes each script's --help into docs/args/<script>.txt, so the docs' Args reference is generated, never retyped.

python docs/gen_help.py        # tests/test_docs.py fails when these files are stale
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["qmix.py", "qmix_memefficient.py", "qmix_lstm.py", "qmix_multienvs.py"]


def help_text(script):
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, f"cleanmarl/{script}", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "args").mkdir(exist_ok=True)
    for script in SCRIPTS:
        (ROOT / "docs" / "args" / script.replace(".py", ".txt")).write_text(help_text(script))
