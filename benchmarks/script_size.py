"""Size of each QMIX script, measured the same way for all (tests/test_shape.py holds the budgets): characters, code tokens (Python
tokenize's tokens without comments, newlines and indentation), the names it imports from this project (a reader
learns each), lines over 100 columns and `fmt: skip` markers.

    python benchmarks/script_size.py [FILE ...]     (default: the four scripts)
"""

import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("qmix.py", "qmix_memefficient.py", "qmix_lstm.py", "qmix_multienvs.py")
NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def size(text):
    """-> dict(characters, code_tokens, project_names, long_lines, fmt_skip)"""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return dict(
        characters=len(text),
        code_tokens=sum(t.type not in NOT_CODE for t in tokens),
        project_names=len(project_names(text)),
        long_lines=sum(len(line) > 100 for line in text.splitlines()),
        fmt_skip=text.count("fmt: skip"),
    )


def project_names(text):
    """The names a script imports from this project (`from cleanmarl.x import a, b`: a and b)."""
    names = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cleanmarl"):
            names += [alias.asname or alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("cleanmarl")]
    return names


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or [ROOT / "cleanmarl" / s for s in SCRIPTS]
    print(
        f"{'file':<24} {'characters':>10} {'code tokens':>11} {'names':>5} {'> 100':>5} {'skip':>4}"
    )
    for path in paths:
        s = size(path.read_text())
        print(
            f"{path.name:<24} {s['characters']:>10,} {s['code_tokens']:>11,}"
            f" {s['project_names']:>5} {s['long_lines']:>5} {s['fmt_skip']:>4}"
        )
