"""Docs that cannot drift: the Args reference is --help itself, each script has its page and links to it, every logged
metric is documented, every figure has a caption, and CI runs exactly the README's test command."""

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import gen_help  # noqa: E402


def test_args_reference_is_current():
    for script in gen_help.SCRIPTS:
        committed = (ROOT / "docs" / "args" / script.replace(".py", ".txt")).read_text()
        assert committed == gen_help.help_text(script), (
            f"run python docs/gen_help.py ({script} --help changed)"
        )


def script_pages():
    return {script: ROOT / "docs" / script.replace(".py", ".md") for script in gen_help.SCRIPTS}


def test_each_script_has_its_page():
    nav = (ROOT / "mkdocs.yml").read_text()
    for script, page in script_pages().items():
        assert page.exists(), f"{script} has no docs page {page.name}"
        assert f": {page.name}\n" in nav, f"{page.name} is not in mkdocs.yml's nav"
        text = page.read_text()
        assert text.startswith(f"# `{script}`\n"), (
            f"{page.name} does not open with its script's name"
        )
        assert f'--8<-- "docs/args/{script.replace(".py", ".txt")}"' in text, (
            f"{page.name} lacks its Args reference"
        )


def test_each_script_page_plays_a_policy_of_its_own():
    """Each script's page embeds a video of that script's policy, and the file is there."""
    stems = [s.removesuffix(".py") for s in script_pages()]
    for script, page in script_pages().items():
        videos = re.findall(r'<video src="\.\./(img/video/[^"]+)"', page.read_text())
        # named <script>_<what>.mp4: the longest stem it starts with is its script's
        owner = {
            v: max((s for s in stems if Path(v).name.startswith(s + "_")), key=len, default="")
            for v in videos
        }
        mine = [v for v in videos if owner[v] == script.removesuffix(".py")]
        assert mine, f"{page.name} plays no video of {script}'s policy"
        assert all((ROOT / "docs" / v).is_file() for v in mine), mine


def test_each_script_links_its_page():
    """Line 1 of a script links its page (style guide, section 1), and the heading it names exists."""
    for script, page in script_pages().items():
        first = (ROOT / "cleanmarl" / script).read_text().splitlines()[0]
        match = re.fullmatch(
            r"# Docs: https://github\.com/cleanmarl/cleanmarl/blob/main/docs/([\w.]+?)(?:#([\w-]+))?",
            first,
        )
        assert match and match.group(1) == page.name, (
            f"line 1 of {script} should link docs/{page.name}: {first}"
        )
        headings = re.findall(r"^#+ (.+?)(?: \{ #([\w-]+) \})?$", page.read_text(), flags=re.M)
        slugs = {
            explicit or re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())
            for text, explicit in headings
        }
        assert match.group(2) in slugs | {None}, (
            f"line 1 of {script} links #{match.group(2)}, no heading of {page.name}"
        )


def update_logs(source):
    """The names of the update's train/* scalars, as a script names them where it computes them:
    `logs = dict(name=...)`, `logs |= dict(name=...)`, `logs["name"] = ...`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        calls = []
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            if getattr(target.value, "id", None) == "logs":
                names.add(target.slice.value)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "logs":
            calls.append(node.value)
        if isinstance(node, ast.AugAssign) and getattr(node.target, "id", None) == "logs":
            calls.append(node.value)
        for call in calls:
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "dict":
                names |= {keyword.arg for keyword in call.keywords}
    return names


def test_every_logged_metric_is_documented():
    scripts = [*(ROOT / "cleanmarl").glob("qmix*.py"), *(ROOT / "cleanmarl" / "utils").glob("*.py")]
    source = "\n".join(path.read_text() for path in scripts)
    metrics = set(re.findall(r'"((?:rollout|train|eval|charts)/[A-Za-z_]+)"', source))
    metrics |= {f"train/{name}" for name in update_logs(source)}
    assert {"train/loss", "train/grads", "eval/ep_reward", "charts/SPS"} <= metrics
    docs = "".join(page.read_text() for page in script_pages().values())
    missing = sorted(m for m in metrics if f"`{m}`" not in docs)
    assert not missing, (
        f"metrics logged but not documented on the script pages (docs/qmix*.md): {missing}"
    )


def test_every_figure_has_a_caption():
    """An image is a figure with a caption saying what was run (tests/test_site.py checks the same in a browser)."""
    for page in (ROOT / "docs").glob("*.md"):
        lines = [line.strip() for line in page.read_text().splitlines()]
        for i, line in enumerate(lines):
            if line.startswith("!["):
                assert lines[i - 1] == "<figure markdown>" and lines[i + 1].startswith(
                    "<figcaption"
                ), (
                    f"{page.name}:{i + 1}: put the image in <figure markdown> with a <figcaption> saying what was run"
                )


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^# README test command\n(.+)$", readme, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command.strip() in [line.strip() for line in ci if not line.lstrip().startswith("#")]


def run_smaclite_snippet(heading, capsys):
    """Run the first Python block under `heading` of docs/smaclite.md as printed -> what it printed,
    the env's physics line aside."""
    pytest.importorskip("smaclite")
    page = (ROOT / "docs" / "smaclite_notes.md").read_text()
    section = page[page.index(heading) :]
    code = section[section.index("```python\n") + 10 :].split("```")[0]
    exec(compile(code, "smaclite.md", "exec"), {})
    return [line for line in capsys.readouterr().out.splitlines() if "physics" not in line]


def test_the_2m_vs_1z_snippet_loses_attacking_and_wins_with_the_searched_line(capsys):
    """docs/smaclite_notes.md's snippet, run as printed: both marines attacking lose every battle with a
    return of 4.61 in 17 steps; the 48-step line the beam search found wins every one."""
    said = run_smaclite_snippet("## `2m_vs_1z`", capsys)
    won = [(True, 20.0, 48)] * 5
    assert said == ["attack only " + str([(False, 4.61, 17)] * 5), f"the searched line {won}"]


def readme_numbers(text):
    """The numbers the README's prose states: outside code, links and the results block (which
    benchmarks/redraw.py draws from the store for both), years and Python versions aside."""
    start, end = text.index("<!-- RESULTS"), text.index("<!-- /RESULTS -->")
    text = text[:start] + text[end:]
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`|\]\([^)]*\)|\bPython (?:>= )?[\d.]+|\b(?:19|20)\d\d\b", "", text)
    numbers = re.findall(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\w]|[.,]\d)", text)
    return sorted({n for n in numbers if not (n.isdigit() and int(n) <= 10)})


def test_every_number_the_readme_states_is_in_the_docs():
    """README and docs agree number for number: each number of the README's prose stands in a page."""
    docs = "".join(page.read_text() for page in (ROOT / "docs").rglob("*.md"))
    numbers = readme_numbers((ROOT / "README.md").read_text())
    assert len(numbers) >= 3, numbers  # 0.99 and its 1.0, the CI: the rest is drawn from the store
    missing = [
        n for n in numbers if not re.search(rf"(?<![\w.,]){re.escape(n)}(?![\w]|[.,]\d)", docs)
    ]
    assert not missing, f"numbers the README states that no docs page does: {missing}"


CLEANMARL = "[CleanMARL](https://github.com/AmineAndam04/cleanmarl)"


def test_every_page_that_names_cleanmarl_links_it():
    """Its script names are this project's: a reader must see it is another project, so each page
    that names it in prose (code aside) links it, at or before the first mention."""
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        prose = re.sub(r"```.*?```|`[^`]*`", "", page.read_text(), flags=re.S)
        first = prose.find("CleanMARL")
        assert first < 0 or 0 <= prose.find(CLEANMARL) <= first, (
            f"{page.relative_to(ROOT)}: link {CLEANMARL} where CleanMARL is first named"
        )


def smaclite_store():
    """(script, map, flag set) -> the seeds the SMAClite store holds, from its run folders' names
    (the sweep's script__map__flags__seed)."""
    seeds = {}
    for folder in (ROOT / "benchmarks" / "results" / "smaclite").iterdir():
        if folder.is_dir():
            script, env, flags, seed = folder.name.split("__")
            seeds.setdefault((script, env, flags), set()).add(int(seed))
    return seeds


def test_the_smaclite_prose_counts_what_the_store_holds():
    """One story: the map count, which maps run 5 seeds at the defaults (3 elsewhere), and which
    run qmix_memefficient.py, as smaclite.md and qmix.md say them, are the store's."""
    store = smaclite_store()
    defaults = {  # qmix.py's, or qmix_memefficient.py's where the padded buffer does not fit
        env: len(s)
        for (script, env, flags), s in store.items()
        if flags == "defaults" and script != "qmix_lstm"
    }
    page = (ROOT / "docs" / "smaclite.md").read_text()
    count = int(re.search(r"The (\d+) maps this project offers", page).group(1))
    assert count == len({env for _, env, _ in store}) == 22
    five = set(re.findall(r"`([^`]+)`", re.search(r"\(5\s+on\s+(.*?)\)", page, re.S).group(1)))
    assert five == {env for env, n in defaults.items() if n == 5}
    assert set(defaults.values()) == {3, 5}
    assert "3 or 5 seeds each" in (ROOT / "docs" / "qmix.md").read_text()
    memefficient = {env for script, env, _ in store if script == "qmix_memefficient"}
    grid = page[page.index("## The grid") : page.index("- **Flags.**")]
    named = set(re.findall(r"`([0-9a-zA-Z_]+)`", grid)) & {env for _, env, _ in store}
    assert memefficient <= named, memefficient - named


def test_every_page_keeps_its_budget():
    """A reference stays readable: each docs page <= 16,000 characters of Markdown (the tables
    redraw.py draws are included by reference, not counted) and the README <= 8,000."""
    sizes = {p.name: len(p.read_text()) for p in (ROOT / "docs").glob("*.md")}
    assert sizes and max(sizes.values()) <= 16_000, sorted(sizes.items(), key=lambda x: -x[1])[:3]
    assert len((ROOT / "README.md").read_text()) <= 8_000
