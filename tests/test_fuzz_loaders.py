"""Property-based fuzz of every loader a run directory feeds a script (the training state, a
checkpoint, models.json, evaluations.jsonl): a truncated file, flipped bytes or a value of
another type gives the intact file's result or one ValueError line, never another exception, and
nothing is written outside the run directory. The report's loaders: test_report_faults.py."""

import io
import json
import random
import shutil
import signal

import numpy as np
import pytest
import torch
import tyro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanmarl import qmix
from cleanmarl.env import make_env
from cleanmarl.utils import layout
from cleanmarl.utils.checkpoints import keep_best, load_networks, models_snapshot
from cleanmarl.utils.flags import startup_args
from cleanmarl.utils.resume import load_state
from tests.test_hostile import SHORT, one_error_line
from tests.test_resume import snapshot
from tests.test_smoke import run

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JSON_VALUES = [None, "x", -1, 1e308, float("nan"), [], {}, [1, "a"], {"path": "../x"}, True]
ODD_VALUES = [*JSON_VALUES, b"\0", torch.zeros(2)]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A short finished qmix.py run: its training state, checkpoints and records."""
    path = tmp_path_factory.mktemp("fuzz")
    run(path, *SHORT, "--save-model")
    (run_dir,) = (path / "runs").iterdir()
    return run_dir


def damaged(data, how, rng):
    """data truncated, or with 1-8 bytes flipped."""
    if how == "truncate":
        return data[: rng.randrange(len(data))]
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def leaves(tree, path=()):
    """(path, value) of every dict entry in a nested structure of dicts and lists (no tensors)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*path, key), value
            yield from leaves(value, (*path, key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from leaves(value, (*path, i))


def retyped(tree, rng, values=ODD_VALUES, depth=None):
    """tree with one entry (not a tensor's contents; at `depth` levels down, if given) given a
    value of another kind."""
    paths = [p for p, v in leaves(tree) if not isinstance(v, torch.Tensor)]
    paths = [p for p in paths if depth is None or len(p) == depth]
    *parents, last = rng.choice(paths)
    node = tree
    for key in parents:
        node = node[key]
    if isinstance(node, tuple):
        return tree  # tuples (the RNG states) cannot be edited in place; left as they are
    node[last] = rng.choice(values)
    return tree


def outside_unchanged(before, folder):
    return snapshot(folder) == before


@settings(max_examples=150, **SETTINGS)
@given(
    how=st.sampled_from(["truncate", "flip", "retype", "retype_part"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_training_state_loads_whole_or_is_one_line(saved_run, tmp_path_factory, how, seed):
    rng = random.Random(seed)
    work = tmp_path_factory.mktemp("state")
    run_dir = work / "run"
    shutil.copytree(saved_run, run_dir)
    data = (saved_run / layout.STATE_FILE).read_bytes()
    if how.startswith("retype"):
        depth = 1 if how == "retype_part" else None  # a whole part: step, args, models, ...
        state = retyped(torch.load(io.BytesIO(data), weights_only=True), rng, depth=depth)
        torch.save(state, run_dir / layout.STATE_FILE)
    else:
        (run_dir / layout.STATE_FILE).write_bytes(damaged(data, how, rng))
    before = snapshot(work)
    try:
        state = load_state(str(run_dir))
    except ValueError as e:
        assert len(str(e).splitlines()) == 1
    else:  # what the script takes from it
        kinds = dict(script=str, args=dict, step=int, elapsed=float, objects=dict, rngs=dict)
        assert all(isinstance(state[part], kind) for part, kind in kinds.items())
        assert {"torch", "numpy", "random"} <= set(state["rngs"]) and state["step"] >= 0
    assert outside_unchanged(before, work)


@settings(max_examples=8, **SETTINGS)
@given(how=st.sampled_from(["flip", "retype"]), seed=st.integers(0, 2**32 - 1))
def test_a_resume_from_a_damaged_state_runs_or_is_one_line(saved_run, tmp_path_factory, how, seed):
    """The whole script, resumed for a few more episodes: no traceback, no write outside."""
    rng = random.Random(seed)
    work = tmp_path_factory.mktemp("resume")
    run_dir = work / "runs" / "run"
    shutil.copytree(saved_run, run_dir)
    outside = work.parent / f"{work.name}-outside"
    outside.mkdir()
    path = run_dir / layout.STATE_FILE
    if how == "retype":
        torch.save(retyped(torch.load(path, weights_only=True), rng), path)
    else:
        path.write_bytes(damaged(path.read_bytes(), how, rng))
    proc = run(work, "--resume", "runs/run", "--total-timesteps", "700", check=False)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if proc.returncode != 0:
        one_error_line(proc)
    assert list(outside.iterdir()) == []


@pytest.fixture
def signals_kept():
    """startup_args catches SIGINT and SIGTERM for a script: put pytest's handlers back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def load_like_the_script(path):
    """--load-model PATH --eval-only, as qmix.py's setup reads it: flags, networks."""
    cli = lambda cls, default=None: tyro.cli(  # noqa: E731
        cls, args=["--load-model", str(path), "--eval-only"], default=default
    )
    args, _, checkpoint = startup_args(cli, qmix.Args, qmix.CHECKPOINT_FLAGS, qmix.CHECKPOINT_NETS)
    env = make_env(args.env_type, args.env_name, seed=args.seed, time_limit=args.time_limit)
    obs = qmix.agent_inputs(np.zeros((env.n_agents, env.obs_size)), None, env.n_actions, args)
    obs_size = obs.shape[-1]
    q_network = qmix.QNetwork(obs_size, env.n_actions, args.hidden_dim, args.num_layers)
    mixer = qmix.QMixer(env.n_agents, env.state_size, args.mixer_embed_dim)
    nets = dict(q_network=q_network, mixer=mixer)
    nets["target_q_network"] = qmix.QNetwork(
        obs_size, env.n_actions, args.hidden_dim, args.num_layers
    )
    nets["target_mixer"] = qmix.QMixer(env.n_agents, env.state_size, args.mixer_embed_dim)
    load_networks(nets, checkpoint, "--load-model")
    return nets


@settings(max_examples=100, **SETTINGS)
@given(how=st.sampled_from(["truncate", "flip", "retype"]), seed=st.integers(0, 2**32 - 1))
def test_a_checkpoint_loads_whole_or_is_one_line(
    saved_run, tmp_path_factory, signals_kept, how, seed
):
    rng = random.Random(seed)
    work = tmp_path_factory.mktemp("checkpoint")
    path = work / "qmix.cleanmarl_model"
    data = (saved_run / path.name).read_bytes()
    if how == "retype":
        torch.save(retyped(torch.load(io.BytesIO(data), weights_only=True), rng), path)
    else:
        path.write_bytes(damaged(data, how, rng))
    before = snapshot(work)
    try:
        load_like_the_script(path)
    except ValueError as e:
        assert len(str(e).splitlines()) == 1
    except SystemExit as e:  # tyro refusing a default it was given: its own message
        assert e.code != 0
    assert outside_unchanged(before, work)


@settings(max_examples=150, **SETTINGS)
@given(how=st.sampled_from(["truncate", "flip", "retype"]), seed=st.integers(0, 2**32 - 1))
def test_models_json_is_used_whole_or_is_one_line(saved_run, tmp_path_factory, how, seed):
    """What keep_best and the training state read of models.json: a damaged one is refused."""
    rng = random.Random(seed)
    work = tmp_path_factory.mktemp("models")
    run_dir = work / "run"
    shutil.copytree(saved_run, run_dir)
    path = run_dir / layout.MODELS_FILE
    data = path.read_bytes()
    if how == "retype":
        path.write_text(json.dumps(retyped(json.loads(data), rng, JSON_VALUES)))
    else:
        path.write_bytes(damaged(data, how, rng))
    before = snapshot(work)
    for load in (models_snapshot, keep_best):
        try:
            load(str(run_dir))
        except ValueError as e:
            assert len(str(e).splitlines()) == 1
    after = snapshot(work)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert all(p.is_relative_to(run_dir) for p in changed)


@settings(max_examples=150, **SETTINGS)
@given(how=st.sampled_from(["truncate", "flip", "retype"]), seed=st.integers(0, 2**32 - 1))
def test_evaluation_records_read_whole_or_are_one_line(saved_run, tmp_path_factory, how, seed):
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("records") / layout.EVAL_FILE
    data = (saved_run / layout.EVAL_FILE).read_bytes()
    if how == "retype":
        records = [json.loads(line) for line in data.splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in retyped(records, rng, JSON_VALUES)))
    else:
        path.write_bytes(damaged(data, how, rng))
    try:
        records = layout.read_records(path)
    except ValueError as e:
        assert len(str(e).splitlines()) == 1
    else:
        assert all(layout.record_problem(r) is None for r in records)


def test_the_fuzz_reaches_the_script_through_the_command_line(saved_run, tmp_path):
    """The loaders above are the ones the script calls: a damaged checkpoint given to the script
    itself is one line (the in-process fuzz would miss a loader the script stopped using)."""
    path = tmp_path / "qmix.cleanmarl_model"
    path.write_bytes((saved_run / path.name).read_bytes()[:100])
    proc = run(tmp_path, "--load-model", str(path), "--eval-only", check=False)
    assert "is not a cleanmarl checkpoint" in one_error_line(proc)
