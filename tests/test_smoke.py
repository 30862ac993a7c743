"""Runs cleanmarl/qmix.py end to end in a subprocess: every family, seeding, errors, save/load, learning."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cleanmarl import qmix

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cleanmarl" / "qmix.py"
LBF = ["--env-type", "lbf", "--env-name", "Foraging-8x8-2p-2f-coop-v3"]
TWO_STEP = ["--env-type", "gym", "--env-name", "tests.two_step:TwoStep-v0"]


def run(tmp_path, *args, check=True, script=SCRIPT, code=None):
    """Run a script (qmix.py unless told) from tmp_path (its runs/ folder lands there); tests/ importable for test envs.
    With code, `python -c code script args` (code runs the script itself, after patching what it needs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, *(["-c", code] if code else []), str(script), "--no-progress-bar", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def scalars(tmp_path, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


SMOKE = {
    "lbf": LBF,
    "mpe": ["--env-type", "pz", "--env-family", "mpe", "--env-name", "simple_spread_v3"],
    "mpe_heterogeneous": ["--env-type", "pz", "--env-name", "simple_speaker_listener_v4"],
    "gym_tuple": TWO_STEP,
    "rware": ["--env-type", "gym", "--env-name", "rware:rware-tiny-2ag-v2", "--time-limit", "50"],
    "smaclite_3m": ["--env-type", "smaclite", "--env-name", "3m"],
}
NEEDS = {"rware": "rware", "smaclite_3m": "smaclite"}


SCRIPTS = sorted((ROOT / "cleanmarl").glob("qmix*.py"))  # qmix.py and every variant present


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
@pytest.mark.parametrize("name", SMOKE)
def test_smoke(tmp_path, name, script):
    package = NEEDS.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (see README: optional envs)")
    steps = 150 if name == "smaclite_3m" else 400
    run(
        tmp_path,
        *SMOKE[name],
        "--total-timesteps",
        str(steps),
        "--batch-size",
        "2",
        "--eval-steps",
        "4",
        "--log-every",
        "2",
        script=script,
    )
    for tag in ("rollout/ep_reward", "train/loss", "train/grads", "eval/ep_reward", "charts/SPS"):
        values = scalars(tmp_path, tag)
        assert values and all(v == v and abs(v) < float("inf") for _, v in values), tag
    reward_scale = [v for _, v in scalars(tmp_path, "train/reward_scale")]
    assert reward_scale and all(v > 0 for v in reward_scale)
    if name in (
        "mpe",
        "mpe_heterogeneous",
        "gym_tuple",
        "smaclite_3m",
    ):  # rewards that vary within the first episodes
        assert reward_scale[-1] != 1.0, "--normalize-reward (the default) never set a scale"
    steps_logged = [s for s, _ in scalars(tmp_path, "rollout/ep_reward")]
    assert (
        steps_logged == sorted(steps_logged) and steps_logged[-1] <= steps + 400
    )  # x-axis: env steps
    if name == "smaclite_3m":
        assert scalars(tmp_path, "eval/battle_won")


def losses(tmp_path, seed):
    args = [
        "--total-timesteps",
        "1500",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--eval-steps",
        "10",
    ]
    run(tmp_path, *LBF, *args, "--seed", str(seed))
    return scalars(tmp_path, "train/loss"), scalars(tmp_path, "eval/ep_length")


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    loss_a, eval_a = losses(tmp_path / "a", 1)
    loss_b, eval_b = losses(tmp_path / "b", 1)
    loss_c, _ = losses(tmp_path / "c", 2)
    assert len(loss_a) > 5
    assert loss_a == loss_b and eval_a == eval_b
    assert loss_a != loss_c


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env-name", "nope_v9"], "pass --env-type"),
        (["--seed", "-1"], "--seed"),
        (["--exp-name", "a/b", "--save-model"], "--exp-name"),
        (["--num-layers", "-1"], "--num-layers must be >= 0"),
        (["--start-e", "2", "--end-e", "-1"], "--start-e"),
        (["--end-e", "-1"], "--end-e"),
        (["--env-name", "rware:rware-tiny-2ag-v2", "--time-limit", "1000"], "1000"),
        (["--env-type", "lbf", "--env-name", "Foraging-99x1-v0"], "unknown LBF env"),
        (
            ["--env-type", "pz", "--env-family", "mpe", "--env-name", "simple_nope_v1"],
            "unknown MPE env",
        ),
        ([*LBF, "--batch-size", "20", "--buffer-size", "10"], "--batch-size"),
        ([*LBF, "--eval-only"], "--eval-only needs --load-model"),
        ([*LBF, "--load-model", "missing.pt"], "no file"),
        ([*LBF, "--load-model", "not_a_model.pt"], "not a cleanmarl checkpoint"),
        ([*LBF, "--load-model", "empty.pt"], "not a cleanmarl checkpoint"),
        ([*LBF, "--load-model", "tensor.pt"], "not a cleanmarl checkpoint"),
        ([*LBF, "--load-model", "truncated.pt"], "not a cleanmarl checkpoint"),
        ([*LBF, "--time-limit", "0"], "time_limit must be > 0"),
        ([*LBF, "--buffer-size", "100000000"], "or less, or cleanmarl/qmix_memefficient.py"),
        ([*LBF, "--learning-rate", "-1"], "--learning-rate"),
        ([*LBF, "--learning-rate", "nan"], "--learning-rate"),
        (["--start-e", "0.1", "--end-e", "0.5"], "epsilon decays"),
        (["--env_name", "nope_v9"], "pass --env-type"),  # underscore spellings parse too
    ],
)
def test_bad_input_gives_one_error_line(tmp_path, args, message):
    (tmp_path / "not_a_model.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save(
        {"q_network": {"w": torch.zeros(1000)}, "mixer": {}, "args": {}}, tmp_path / "whole.pt"
    )
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:2000])
    if "rware" in " ".join(args) and importlib.util.find_spec("rware") is None:
        pytest.skip("rware is not installed (pip install -e '.[rware]')")
    proc = run(tmp_path, *args, "--total-timesteps", "10", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and not (tmp_path / "runs").exists()
    assert len(lines) == 1 and lines[0].startswith("qmix.py: error:") and message in lines[0], (
        proc.stderr
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--env-type", "nope"],
        ["--env-family", "nope"],
    ],
)
def test_fixed_choices_are_checked_by_the_parser(tmp_path, args):
    """Fields with fixed choices are Literal types: tyro rejects other values (its own message, exit 2, no trace)."""
    proc = run(tmp_path, *args, "--total-timesteps", "10", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and args[1] in proc.stderr


def test_no_flags_trains_on_lbf_and_says_where(tmp_path):
    """The bare command (only shortened here) trains on LBF, prints its run directory first, and a redirected log
    gets no progress-bar carriage returns."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--total-timesteps",
        "300",
        "--batch-size",
        "2",
        "--log-every",
        "2",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, timeout=600
    )  # bytes: text=True hides \r
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("Foraging-8x8-2p-2f-coop-v3__qmix__1__")
    assert (
        proc.stdout.decode().splitlines()[0]
        == f"run directory: runs/{run_dir.name} (tensorboard --logdir runs)"
    )
    assert b"\r" not in proc.stdout + proc.stderr
    assert scalars(tmp_path, "train/loss")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unusable_device_gives_one_error_line(tmp_path):
    proc = run(tmp_path, *LBF, "--device", "cuda", "--total-timesteps", "10", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "--device" in lines[0], proc.stderr


# Runs a script as if wandb were not installed (None in sys.modules makes `import wandb` raise ImportError).
WITHOUT_WANDB = "import runpy, sys; sys.modules['wandb'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_use_wnb_without_wandb_gives_one_error_line(tmp_path, script):
    proc = run(
        tmp_path,
        *LBF,
        "--use-wnb",
        "--total-timesteps",
        "10",
        check=False,
        script=script,
        code=WITHOUT_WANDB,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "pip install wandb" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists() or not any(
        (tmp_path / "runs").iterdir()
    )  # no run directory made


def test_a_checkpoint_for_other_env_inputs_is_one_line_naming_the_shapes(tmp_path):
    """Same env and flags, other input sizes: a checkpoint from a cleanmarl whose env gave one feature fewer (as MPE's
    and SMAClite's did before fixed horizons added the remaining time). One line naming the weight, not "damaged"."""
    train = ["--env-name", "Foraging-8x8-2p-1f-coop-v3", "--hidden-dim", "16", "--save-model"]
    run(tmp_path, *train, "--total-timesteps", "200", "--eval-steps", "2")
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    checkpoint = torch.load(model, weights_only=True)
    for key in ("q_network", "mixer"):  # the first weight of each network, one input fewer
        old = dict(checkpoint)
        name, weight = next(iter(checkpoint[key].items()))
        old[key] = {**checkpoint[key], name: weight[:, :-1]}
        torch.save(old, tmp_path / "old.pt")
        proc = run(tmp_path, "--eval-only", "--load-model", "old.pt", check=False)
        lines = proc.stderr.strip().splitlines()
        shapes = f"({key} {name}: {[weight.shape[0], weight.shape[1] - 1]} in it, {list(weight.shape)} here)"
        assert (
            proc.returncode == 1
            and len(lines) == 1
            and f"was saved for other env inputs {shapes}" in lines[0]
        ), proc.stderr


def test_save_model_checkpoints_at_every_evaluation(tmp_path):
    """A run stopped before its end (killed, out of time) keeps the policy of its latest evaluation."""
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--no-progress-bar",
        *LBF,
        "--save-model",
        "--eval-steps",
        "2",
    ]
    proc = subprocess.Popen(
        cmd + ["--total-timesteps", "1000000"], cwd=tmp_path, stderr=subprocess.PIPE
    )
    deadline, models = time.monotonic() + 120, []
    while not models and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        models = list((tmp_path / "runs").glob("*/*.cleanmarl_model"))
    time.sleep(2)  # let it overwrite the checkpoint a few times
    proc.kill()
    proc.wait()
    assert proc.returncode != 0 and len(models) == 1, proc.stderr.read()[-3000:]
    result = run(tmp_path, "--eval-only", "--load-model", str(models[0]), "--num-eval-ep", "2")
    assert "eval over 2 episodes" in result.stdout


def test_a_checkpoint_carries_its_flags(tmp_path):
    """--eval-only --load-model PATH alone evaluates on the env and network sizes the checkpoint was trained with;
    safe flags may be given; another env or network size stops with one line naming the mismatch."""
    train = [
        "--env-name",
        "Foraging-8x8-2p-1f-coop-v3",
        "--hidden-dim",
        "16",
        "--num-layers",
        "0",
        "--save-model",
    ]
    run(tmp_path, *train, "--total-timesteps", "200", "--eval-steps", "2")
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    proc = run(
        tmp_path, "--eval-only", "--load-model", str(model), "--num-eval-ep", "3", "--seed", "7"
    )
    assert proc.stdout.startswith("eval over 3 episodes") and not proc.stderr
    proc = run(
        tmp_path,
        "--eval-only",
        "--load-model",
        str(model),
        "--hidden-dim",
        "16",
        "--time-limit",
        "7",
    )
    assert (
        float(proc.stdout.split("length ")[1].split()[0].rstrip(",")) <= 7.0
    )  # --time-limit may be overridden
    for flags, message in [
        (
            ["--env-name", "simple_spread_v3"],
            "trained with --env-name Foraging-8x8-2p-1f-coop-v3, asked for simple_spread_v3",
        ),
        (["--env-name", "Foraging-15x15-2p-2f-coop-v3"], "asked for Foraging-15x15-2p-2f-coop-v3"),
        (["--hidden-dim", "64"], "trained with --hidden-dim 16, asked for 64"),
        (["--num-layers", "1"], "trained with --num-layers 0, asked for 1"),
        (["--env-type", "gym"], "trained with --env-type lbf, asked for gym"),
        (["--no-agent-ids"], "trained with --agent-ids"),
        (["--no-last-action"], "trained with --last-action"),
    ]:
        proc = run(tmp_path, "--eval-only", "--load-model", str(model), *flags, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr


def test_a_checkpoint_without_a_flag_it_needs_is_one_line(tmp_path):
    """A checkpoint whose flags lack one that decides the network's inputs (here --last-action) is
    not loaded with a guess: one line names it."""
    train = [
        "--env-name",
        "Foraging-8x8-2p-1f-coop-v3",
        "--hidden-dim",
        "16",
        "--save-model",
        "--no-last-action",
    ]
    run(tmp_path, *train, "--total-timesteps", "200", "--eval-steps", "2")
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    checkpoint = torch.load(model, weights_only=True)
    del checkpoint["args"]["last_action"]
    torch.save(checkpoint, tmp_path / "old.pt")
    proc = run(tmp_path, "--eval-only", "--load-model", "old.pt", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "its flags lack last_action" in lines[0]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_the_agents_act_on_their_last_action(tmp_path, script):
    """tests/alternate.py: a constant observation, paid for switching actions (optimum 8). Every script's agents get
    their last action by default (the QMIX paper's agent input) and learn to alternate; qmix.py's feed-forward agents
    without it (--no-last-action) see one input at every step, so their greedy policy repeats itself (1.0)."""
    args = [
        "--env-name",
        "tests.alternate:Alternate-v0",
        "--total-timesteps",
        "3000",
        "--eval-steps",
        "20",
    ]
    run(tmp_path, *args, script=script)
    assert [v for _, v in scalars(tmp_path, "eval/ep_reward")[-3:]] == [8.0, 8.0, 8.0]
    if script == SCRIPT:
        (tmp_path / "without").mkdir()
        run(tmp_path / "without", *args, "--no-last-action")
        assert max(v for _, v in scalars(tmp_path / "without", "eval/ep_reward")) == 1.0


# Runs a script with Adam's step wrapped to record the global norm of the gradient each update hands it.
RECORD_ADAM_GRAD_NORMS = """
import json, runpy, sys, torch

norms, step = [], torch.optim.Adam.step

def recorded_step(self, *args, **kwargs):
    grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
    norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
    return step(self, *args, **kwargs)

torch.optim.Adam.step = recorded_step
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("ADAM_GRAD_NORMS", json.dumps(norms))
"""


def adam_grad_norms(tmp_path, script, *args):
    proc = run(tmp_path, *args, script=script, code=RECORD_ADAM_GRAD_NORMS)
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("ADAM_GRAD_NORMS ")]
    return json.loads(line.split(" ", 1)[1])


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_clip_gradients_bounds_the_norm_of_every_update_adam_takes(tmp_path, script):
    """--clip-gradients 10 (PyMARL's grad_norm_clip) scales every update's global gradient norm down to 10 before
    Adam sees it. The two-step game's early updates go past 10 at the defaults (no clipping), so the bound is tested
    where it binds, and train/grads still logs the norm before clipping."""
    args = [*TWO_STEP, "--total-timesteps", "300", "--batch-size", "2", "--log-every", "1"]
    assert max(adam_grad_norms(tmp_path, script, *args)) > 15
    (tmp_path / "clipped").mkdir()
    norms = adam_grad_norms(tmp_path / "clipped", script, *args, "--clip-gradients", "10")
    assert len(norms) > 100 and max(norms) <= 10 * (1 + 1e-5)
    assert max(v for _, v in scalars(tmp_path / "clipped", "train/grads")) > 10


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_cleanly(tmp_path, signum):
    """Ctrl-C (SIGINT) or SIGTERM: no traceback, the logs flushed, the training state saved at the step it stopped at,
    one line naming it and the command that resumes it, 128 + signal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--save-model",
        "--eval-steps",
        "2",
        "--total-timesteps",
        "1000000",
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first_line = proc.stdout.readline()
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs").glob("*/*.cleanmarl_model")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert first_line.startswith("run directory: runs/"), first_line + err
    assert proc.returncode == 128 + signum and "Traceback" not in err, err[-3000:]
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    last = out.strip().splitlines()[-1]
    step = int(last.split(" at step ")[1].split(";")[0])
    run_dir = model.parent.relative_to(tmp_path)
    assert last == (
        f"stopped by {signal.Signals(signum).name} at step {step}; the training state of step {step} is in {run_dir}: "
        f"python {SCRIPT} --resume {run_dir} continues it"
    )
    assert torch.load(model.parent / "training_state.cleanmarl", weights_only=True)["step"] == step
    assert scalars(tmp_path, "rollout/ep_reward") and scalars(tmp_path, "eval/ep_reward")  # flushed


def test_eval_env_is_seeded_apart_from_the_training_env(tmp_path):
    """Each SeedEcho episode returns the next number of its env's seeded generator: evaluation episodes must not
    replay the training episodes (an eval env seeded like the training env would return the same numbers)."""
    args = [
        "--env-name",
        "tests.seed_echo:SeedEcho-v0",
        "--total-timesteps",
        "12",
        "--batch-size",
        "2",
    ]
    run(tmp_path, *args, "--log-every", "1", "--eval-steps", "1", "--num-eval-ep", "1")
    training = [v for _, v in scalars(tmp_path, "rollout/ep_reward")]
    evaluation = [v for _, v in scalars(tmp_path, "eval/ep_reward")]
    assert len(training) == len(evaluation) == 12 and len(set(training)) == 12
    assert not set(training) & set(evaluation)
    (tmp_path / "again").mkdir()
    run(tmp_path / "again", *args, "--log-every", "1", "--eval-steps", "1", "--num-eval-ep", "1")
    assert [
        v for _, v in scalars(tmp_path / "again", "eval/ep_reward")
    ] == evaluation  # and derived from --seed


def test_reward_scale_rescales_the_target_mixer_too(tmp_path):
    """A new reward scale rescales the online and the target mixer alike. With the learning rate at 0 and no target
    copy in the run, the two start equal and must stay equal through every rescale (the checkpoint holds both)."""
    args = [
        "--total-timesteps",
        "400",
        "--batch-size",
        "2",
        "--learning-rate",
        "0",
        "--log-every",
        "1",
    ]
    run(tmp_path, *TWO_STEP, *args, "--target-network-update-freq", "100000", "--save-model")
    scales = [v for _, v in scalars(tmp_path, "train/reward_scale")]
    assert (
        len(set(scales[2:])) > 10
    )  # the scale moved many times (rewards 0, 1, 7, 8 drawn at random)
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    checkpoint = torch.load(model, weights_only=True)
    for name, tensor in checkpoint["mixer"].items():
        torch.testing.assert_close(
            checkpoint["target_mixer"][name], tensor, rtol=1e-6, atol=0, msg=name
        )
    for name, tensor in checkpoint["q_network"].items():
        assert torch.equal(checkpoint["target_q_network"][name], tensor)


def two_step_values(model):
    """A two-step checkpoint's per-agent Q [state, agent, action] and Q_tot [state, joint action], in reward units."""
    checkpoint = torch.load(model, weights_only=True)
    assert not checkpoint["args"][
        "last_action"
    ]  # the paper's game: agents see the state alone (--no-last-action)
    q_network = qmix.QNetwork(3 + 2, 2, 64, 1)
    mixer = qmix.QMixer(2, 3, 32)
    q_network.load_state_dict(checkpoint["q_network"])
    mixer.load_state_dict(checkpoint["mixer"])
    with torch.no_grad():
        eye = torch.eye(3)
        obs = torch.cat([eye.repeat_interleave(2, 0), torch.eye(2).repeat(3, 1)], -1).view(3, 2, 5)
        q_values = q_network(obs)  # [state, agent, action]
        joint = torch.tensor([[a0, a1] for a0 in range(2) for a1 in range(2)])
        q_tot = torch.stack(
            [mixer(q_values[s, [0, 1], joint], eye[s].expand(4, 3)) for s in range(3)]
        )
    return q_values, q_tot * checkpoint["reward_scale"]


def test_checkpoint_reward_scale_puts_q_tot_in_reward_units_and_survives_a_warm_start(tmp_path):
    """With --normalize-reward the mixer learns rewards / std: the checkpoint's reward_scale turns its Q_tot back into
    reward units, and --load-model starts from those units, so training on (lr 0: the nets cannot move) keeps them."""
    args = ["--start-e", "1", "--end-e", "1", "--save-model", "--no-last-action"]
    (tmp_path / "first").mkdir(), (tmp_path / "warm").mkdir()
    run(tmp_path / "first", *TWO_STEP, "--total-timesteps", "4000", *args)
    (model,) = (tmp_path / "first" / "runs").glob("*/*.cleanmarl_model")
    scale = torch.load(model, weights_only=True)["reward_scale"]
    _, q_tot = two_step_values(model)
    assert scale > 1.5 and q_tot[2, 3] == pytest.approx(
        8.0, abs=1.0
    )  # rewards 0, 1, 7, 8: std ~3.3; Q_tot ~7.4
    # A warm start sees other rewards first, so its own scale starts elsewhere; Q_tot must follow it exactly.
    warm_args = [
        "--total-timesteps",
        "200",
        "--learning-rate",
        "0",
        "--load-model",
        str(model),
        "--save-model",
    ]
    run(tmp_path / "warm", *TWO_STEP, *warm_args)
    (warm_model,) = (tmp_path / "warm" / "runs").glob("*/*.cleanmarl_model")
    warm_scale = torch.load(warm_model, weights_only=True)["reward_scale"]
    _, warm_q_tot = two_step_values(warm_model)
    assert warm_scale != pytest.approx(scale, rel=1e-3)
    assert warm_q_tot == pytest.approx(q_tot, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    "env_id, rescaled", [("TwoStepLate-v0", False), ("TwoStepLateConstant-v0", True)]
)
def test_first_reward_scale_rescales_q_tot_only_after_a_nonzero_constant(
    tmp_path, env_id, rescaled
):
    """Updates that ran while the reward std was 0 learned one constant reward / 1. If it was not 0, Q_tot holds it and
    the first real scale must keep it in reward units (rescale from 1). If every reward was 0, Q_tot's true values are 0
    in any unit and a rescale would only blow its error up by 1 / std (LBF seed 4, docs), so there is none.
    lr 0 freezes the nets: Q_tot in the mixer's units stays the initial one, or moves by exactly 1 / std."""
    late = [
        "--env-type",
        "gym",
        "--env-name",
        f"tests.two_step:{env_id}",
        "--batch-size",
        "2",
        "--save-model",
    ]
    late += ["--no-last-action"]
    models = []
    for name, flags in (("raw", ["--no-normalize-reward"]), ("normalized", [])):
        (tmp_path / name).mkdir()
        run(
            tmp_path / name,
            *late,
            "--total-timesteps",
            "200",
            "--learning-rate",
            "0",
            "--log-every",
            "1",
            *flags,
        )
        (model,) = (tmp_path / name / "runs").glob("*/*.cleanmarl_model")
        models.append(model)
    updates = dict(scalars(tmp_path / "normalized", "train/num_updates"))
    scales = dict(scalars(tmp_path / "normalized", "train/reward_scale"))
    assert any(
        updates[t] > 0 and scales[t] == 1.0 for t in updates
    )  # updates ran while the reward std was 0
    scale = torch.load(models[1], weights_only=True)["reward_scale"]
    assert scale > 1.5  # rewards 0, 7 and 8 (and 1) from the 6th episode on
    first_scale = next(
        v for _, v in sorted(scales.items()) if v != 1.0
    )  # the std at the first update that saw one
    initial_q_tot, q_tot = (
        two_step_values(models[0])[1],
        two_step_values(models[1])[1],
    )  # both in reward units
    # Later scales rescale Q_tot exactly, so what the first one did shows in reward units at the end.
    expected = initial_q_tot if rescaled else initial_q_tot * first_scale
    assert q_tot == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert abs(first_scale - 1) > 0.1  # so the two cases differ here


def test_two_step_game_learns_optimum_and_reloads(tmp_path):
    """QMIX paper Sec. 6.1: with uniform exploration QMIX finds the optimal 8 (VDN can only reach 7).

    Checks the learned Q_tot, not only the greedy return (a random init can be greedy-optimal by
    chance), then that --eval-only --load-model reloads the checkpoint.
    """
    # Unnormalised rewards, so the learned Q_tot can be checked in reward units. One-step targets, as in the paper:
    # a lambda-return follows the behaviour policy, here uniform, whose value of 2B is 2.5, not the greedy 8.
    args = [
        "--total-timesteps",
        "4000",
        "--start-e",
        "1",
        "--end-e",
        "1",
        "--no-normalize-reward",
        "--td-lambda",
        "0",
    ]
    args += ["--no-last-action"]  # the paper's agents in this game see the state alone
    run(tmp_path, *TWO_STEP, *args, "--save-model")
    assert [v for _, v in scalars(tmp_path, "eval/ep_reward")[-3:]] == [8.0, 8.0, 8.0]
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    q_values, q_tot = two_step_values(model)
    # state 2B: the joint action (1, 1) pays 8 and is each agent's greedy choice
    assert q_tot[2, 3] == pytest.approx(8.0, abs=0.5) and q_tot[2].argmax() == 3
    assert q_values[2].argmax(-1).tolist() == [1, 1]
    # state 2A pays 7 whatever the agents do; at the start agent 0 must choose 2B
    assert q_tot[1] == pytest.approx(torch.full((4,), 7.0), abs=0.5)
    assert q_values[0, 0].argmax() == 1 and q_tot[0].max() == pytest.approx(0.99 * 8, abs=0.5)

    proc = run(tmp_path, *TWO_STEP, "--eval-only", "--load-model", str(model), "--num-eval-ep", "3")
    assert "eval over 3 episodes: return 8.000" in proc.stdout

    # benchmarks/greedy_stalls.py reads the same checkpoint: the optimal greedy policy never stalls
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stalls = [
        sys.executable,
        str(ROOT / "benchmarks" / "greedy_stalls.py"),
        str(model),
        "--episodes",
        "4",
    ]
    proc = subprocess.run(
        stalls, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    greedy = proc.stdout.splitlines()[1].split()
    assert greedy[:4] == ["epsilon", "0.0", "return", "8.000"] and greedy[-2:] == [
        "stalled",
        "0.0%",
    ]
    start = proc.stdout.splitlines()[
        2
    ]  # Q_tot at s0 in reward units, against the discounted greedy return 0.99 * 8
    start_q, discounted = (float(part.split()[-1].rstrip(";")) for part in start.split(";"))
    assert (
        "reward units" in start
        and discounted == pytest.approx(7.92)
        and start_q == pytest.approx(7.92, abs=0.5)
    )


def test_warm_start_loads_the_target_networks(tmp_path):
    """--load-model restores the target networks saved with the online ones (not copies of the online ones): with no
    target copy in either run, the online network moves while the target stays, and the warm start (lr 0) keeps both."""
    args = ["--batch-size", "2", "--target-network-update-freq", "100000", "--save-model"]
    (tmp_path / "first").mkdir(), (tmp_path / "warm").mkdir()
    run(tmp_path / "first", *TWO_STEP, *args, "--total-timesteps", "300")
    (model,) = (tmp_path / "first" / "runs").glob("*/*.cleanmarl_model")
    run(
        tmp_path / "warm",
        "--load-model",
        str(model),
        *args,
        "--total-timesteps",
        "100",
        "--learning-rate",
        "0",
    )
    (warm_model,) = (tmp_path / "warm" / "runs").glob("*/*.cleanmarl_model")
    first, warm = (torch.load(m, weights_only=True) for m in (model, warm_model))
    assert (
        warm["args"]["env_name"] == "tests.two_step:TwoStep-v0"
    )  # the env came from the checkpoint
    for name, tensor in first["q_network"].items():
        assert not torch.equal(
            first["target_q_network"][name], tensor
        )  # the online network moved, the target not
        assert torch.equal(warm["q_network"][name], tensor) and torch.equal(
            warm["target_q_network"][name], first["target_q_network"][name]
        )


def test_torch_threads_caps_numpys_blas_threads_too():
    """--torch-threads sets numpy's BLAS threads with torch's (utils.system.torch_device): threads beyond the free
    cores only wait on each other (docs/qmix.md, detail 15)."""
    import threadpoolctl
    import torch

    from cleanmarl.utils import system

    with threadpoolctl.threadpool_limits(
        2, user_api="blas"
    ):  # as many as 2 cores give it; restored afterwards
        system.torch_device("cpu", 1)
        blas = [
            pool["num_threads"]
            for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "blas"
        ]
        assert blas and all(n == 1 for n in blas) and torch.get_num_threads() == 1
