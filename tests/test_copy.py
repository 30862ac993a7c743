"""A copy of qmix.py is a first-class script: saved anywhere, it runs from any directory, resumes exactly
and is swept by path into --out. A network change is made in QNetwork alone (acting calls it). A change
it cannot support (a mixer without rescale(), a stateful object left out of the training state) stops it
at start with one line; a loop variable kept outside `Loop` is what the exact-resume test catches. A VDN mixer written as a
researcher would learns the two-step game's 7 (QMIX: 8; Rashid et al., 2018, Sec. 6.1)."""

import json
import signal

import pytest
import torch

from cleanmarl import sweep
from tests.test_resume import logs, start
from tests.test_smoke import LBF, ROOT, TWO_STEP, run, scalars

QMIX = (ROOT / "cleanmarl" / "qmix.py").read_text()
# The two-step game with uniform exploration: one-step targets, as in the paper (docs, detail 7)
UNIFORM = [*TWO_STEP, "--start-e", "1", "--end-e", "1", "--td-lambda", "0", "--seed", "1"]


def copy(tmp_path, name, *edits, before=None, add=""):
    """qmix.py saved as tmp_path/elsewhere/name with each (old, new) of edits replaced once, and `add`
    (definitions) inserted before the line `before`."""
    text = QMIX
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    if add:
        text = text.replace(before, add + "\n\n" + before, 1)
    path = tmp_path / "elsewhere" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def one_error_line(proc, script, text):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{script}: error: ") and text in lines[0], lines[0]


NEG_RELU = """class NegReLU(nn.Module):
    def forward(self, x):
        return -torch.relu(x)"""
NETWORK = (
    "layers = [nn.Linear(obs_size, hidden_dim), nn.ReLU()]",
    "layers = [nn.Linear(obs_size, hidden_dim), NegReLU()]",
)
HIDDEN = (
    "layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]",
    "layers += [nn.Linear(hidden_dim, hidden_dim), NegReLU()]",
)


LAYER_NORM_TANH = (
    "layers = [nn.Linear(obs_size, hidden_dim), nn.ReLU()]",
    "layers = [nn.Linear(obs_size, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh()]",
)
NO_NET = (  # the network written as three named layers, no .net
    """        layers = [nn.Linear(obs_size, hidden_dim), nn.ReLU()]
        for _ in range(num_layers):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, n_actions))

    def forward(self, obs):  # [..., N, obs_size] -> [..., N, A]
        return self.net(obs)""",
    """        self.fc1 = nn.Linear(obs_size, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, n_actions)

    def forward(self, obs):  # [..., N, obs_size] -> [..., N, A]
        return self.out(F.relu(self.fc2(F.relu(self.fc1(obs)))))""",
)
NO_AGENT_ID = (  # an input dropped where the script builds what the agents see; sizes follow
    """    if args.agent_ids:
        inputs.append(np.broadcast_to(np.eye(shape[-1], dtype=np.float32), (*shape, shape[-1])))
""",
    "",
)
NETWORK_CHANGES = {
    "neg_relu": dict(edits=(NETWORK, HIDDEN), add=NEG_RELU),
    "layer_norm_tanh": dict(edits=(LAYER_NORM_TANH,)),
    "no_net": dict(edits=(NO_NET,)),
    "no_agent_id": dict(edits=(NO_AGENT_ID,)),
}


@pytest.mark.parametrize("change", NETWORK_CHANGES)
def test_a_network_changed_in_one_place_acts_as_it_trains_and_learns_the_optimum(tmp_path, change):
    """Acting calls the network being trained: a new activation, a LayerNorm/tanh layer or a network
    written without .net is a change of QNetwork alone, an input dropped a change of agent_inputs
    alone. Each copy learns the two-step game's 8."""
    edits = NETWORK_CHANGES[change]
    add = dict(before="class QNetwork", add=edits.get("add", ""))
    script = copy(tmp_path, f"{change}.py", *edits["edits"], **add)
    run(tmp_path, *UNIFORM, "--total-timesteps", "4000", script=script)
    assert [v for _, v in scalars(tmp_path, "eval/ep_reward")[-3:]] == [8.0, 8.0, 8.0]


@pytest.mark.parametrize("change", ["layer_norm_tanh", "no_net", "no_agent_id"])
def test_a_network_changed_in_one_place_resumes_exactly(tmp_path, change):
    edits = NETWORK_CHANGES[change]
    script = copy(tmp_path, f"{change}.py", *edits["edits"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert killed_and_resumed(tmp_path / "b", script) == uninterrupted(tmp_path / "a", script)


VDN = '''class VDNMixer(nn.Module):
    """VDN (Sunehag et al., 2018): Q_tot is the sum of the agents' Q-values (times the reward scale's
    factor: --normalize-reward keeps Q_tot in the units of the rewards it learns)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, q_agents, state):
        return q_agents.sum(-1) * self.scale

    def rescale(self, factor):
        self.scale *= factor'''
USE_VDN = (
    "mixer = QMixer(env.n_agents, env.state_size, args.mixer_embed_dim).to(device)",
    "mixer = VDNMixer().to(device)",
)


def test_a_vdn_copy_learns_the_two_step_games_seven_with_reward_normalisation(tmp_path):
    """VDN's additive Q_tot cannot represent the 8 of matrix 2B: its greedy return is 7, as the paper
    reports, with --normalize-reward on (the default) rescaling the VDN mixer's own scale."""
    script = copy(tmp_path, "vdn.py", USE_VDN, before="class QMixer", add=VDN)
    run(tmp_path, *UNIFORM, "--total-timesteps", "4000", script=script)
    assert [v for _, v in scalars(tmp_path, "eval/ep_reward")[-3:]] == [7.0, 7.0, 7.0]
    scales = [v for _, v in scalars(tmp_path, "train/reward_scale")]
    assert scales[-1] != 1.0  # the rewards were normalised, the mixer rescaled


def test_a_mixer_without_rescale_is_refused_under_reward_normalisation(tmp_path):
    vdn = VDN[: VDN.index("    def rescale")].rstrip()
    script = copy(tmp_path, "vdn.py", USE_VDN, before="class QMixer", add=vdn)
    proc = run(tmp_path, *UNIFORM, "--total-timesteps", "400", script=script, check=False)
    one_error_line(proc, "vdn.py", "--normalize-reward needs mixer.rescale()")
    run(tmp_path, *UNIFORM, "--total-timesteps", "400", "--no-normalize-reward", script=script)


Q_L2 = (
    (
        '''    td_lambda: float = 0.6
    """lambda of the TD(lambda) targets; 0: one-step targets"""
''',
        '''    td_lambda: float = 0.6
    """lambda of the TD(lambda) targets; 0: one-step targets"""
    q_l2: float = 0.0
    """weight of an L2 penalty on the agents' chosen Q-values, added to the TD loss"""
''',
    ),
    (
        "# train/*\n",
        "# train/*\n"
        '            logs["q_l2"] = args.q_l2 * q_taken.pow(2).mean()  # the extra term, logged\n'
        '            loss = loss + logs["q_l2"]\n',
    ),
)


def test_an_extra_loss_term_is_a_flag_and_a_line_and_changes_what_is_learned(tmp_path):
    """docs/copy.md's extra term: at 0 the copy is qmix.py (the same losses); at 0.1 it learns the
    two-step game's 8; at 1 the utilities held near 0 settle for 7."""
    script = copy(tmp_path, "q_l2.py", *Q_L2)
    for weight, greedy in ((0.1, 8.0), (1.0, 7.0)):
        out = tmp_path / str(weight)
        out.mkdir()
        run(out, *UNIFORM, "--total-timesteps", "4000", "--q-l2", str(weight), script=script)
        assert [v for _, v in scalars(out, "eval/ep_reward")[-3:]] == [greedy] * 3, weight
    for name, path in (("copy", script), ("qmix", None)):
        (tmp_path / name).mkdir()
        kwargs = dict(script=path) if path else {}
        run(tmp_path / name, *UNIFORM, "--total-timesteps", "1000", **kwargs)
    assert scalars(tmp_path / "copy", "train/loss") == scalars(tmp_path / "qmix", "train/loss")
    assert {v for _, v in scalars(tmp_path / "copy", "train/q_l2")} == {0.0}


def test_a_stateful_object_left_out_of_the_training_state_is_refused(tmp_path):
    """A new RNG (or network, optimizer, env) that --resume would not restore: one line naming it."""
    new_rng = (
        "reward_stats = RunningStats()",
        "reward_stats, noise_rng = RunningStats(), np.random.default_rng(0)",
    )
    script = copy(tmp_path, "noise.py", new_rng)
    proc = run(tmp_path, *LBF, "--total-timesteps", "400", script=script, check=False)
    one_error_line(proc, "noise.py", "noise_rng is not in the training state")
    listed = ("state |= dict(loop=loop,", "state |= dict(noise_rng=noise_rng, loop=loop,")
    run(
        tmp_path,
        *LBF,
        "--total-timesteps",
        "400",
        script=copy(tmp_path, "noise.py", new_rng, listed),
    )


RESUMED = [*LBF, "--batch-size", "8", "--eval-steps", "8", "--log-every", "2", "--seed", "3"]


def killed_and_resumed(tmp_path, script, total=3000):
    """The run's logs after a SIGKILL right after its first saved state and a --resume."""
    flags = [*RESUMED, "--total-timesteps", str(total), "--checkpoint-every", "0.003"]
    proc, run_dir = start(tmp_path, script, flags=flags)
    proc.kill()
    proc.communicate()
    run(tmp_path, "--resume", str(run_dir.relative_to(tmp_path)), script=script)
    return logs(run_dir, tags=("train/loss", "train/episodes_seen"))


def uninterrupted(tmp_path, script, total=3000):
    run(tmp_path, *RESUMED, "--total-timesteps", str(total), script=script)
    (run_dir,) = (tmp_path / "runs").iterdir()
    return logs(run_dir, tags=("train/loss", "train/episodes_seen"))


@pytest.mark.parametrize("where", ["loop_field", "plain_variable"])
def test_a_new_loop_variable_is_one_field_of_loop_and_forgetting_it_breaks_resume(tmp_path, where):
    """A counter logged as train/episodes_seen. As a field of Loop (one line) --resume restores it; as a
    plain variable it restarts at 0 after a resume: the resumed run's logs differ from the
    uninterrupted run's, which is what tests/test_resume.py asserts of every script."""
    if where == "loop_field":
        edits = [
            ("    num_updates: int = 0\n", "    num_updates: int = 0\n    episodes_seen: int = 0\n")
        ]
        edits += [
            (
                "        loop.num_episodes += 1\n",
                "        loop.num_episodes += 1\n        loop.episodes_seen += 1\n",
            )
        ]
        logged = "loop.episodes_seen"
    else:
        edits = [
            ("    while loop.global_step", "    episodes_seen = 0\n    while loop.global_step")
        ]
        edits += [
            (
                "        loop.num_episodes += 1\n",
                "        loop.num_episodes += 1\n        episodes_seen += 1\n",
            )
        ]
        logged = "episodes_seen"
    edits += [
        (
            'scalars["train/num_updates"] =',
            f'scalars["train/episodes_seen"] = {logged}\n            scalars["train/num_updates"] =',
        )
    ]
    script = copy(tmp_path, f"{where}.py", *edits)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    expected, got = (
        uninterrupted(tmp_path / "a", script),
        killed_and_resumed(tmp_path / "b", script),
    )
    assert len(expected["train/episodes_seen"]) > 20
    assert (got == expected) == (where == "loop_field")


def test_a_copy_saved_anywhere_runs_resumes_and_is_swept_by_path(tmp_path):
    """An unchanged copy outside the package, run from another directory: SIGTERM in the middle and
    --resume give the uninterrupted run's logs; cleanmarl.sweep --scripts PATH runs it under --out."""
    script = copy(tmp_path, "my_qmix.py")
    for name in ("a", "b", "sweep"):
        (tmp_path / name).mkdir()
    expected = uninterrupted(tmp_path / "a", script)
    flags = [*RESUMED, "--total-timesteps", "3000", "--checkpoint-every", "0.003"]
    proc, run_dir = start(tmp_path / "b", script, flags=flags)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode in (0, 128 + signal.SIGTERM), err[-3000:]
    run(tmp_path / "b", "--resume", str(run_dir.relative_to(tmp_path / "b")), script=script)
    assert logs(run_dir, tags=("train/loss", "train/episodes_seen")) == expected
    out = tmp_path / "sweep" / "out"
    argv = [
        "--scripts",
        str(script),
        "--envs",
        LBF[-1],
        "--out",
        str(out),
        "--",
        "--total-timesteps",
        "300",
    ]
    assert sweep.main(argv) == 0
    (folder,) = out.iterdir()
    assert folder.name == f"my_qmix__{LBF[-1]}__defaults__1" and (folder / "done").exists()
    assert json.loads((folder / "meta.json").read_text())["script_file"] == str(script)
    assert list(folder.glob("runs/*/evaluations.jsonl")) and not (script.parent / "runs").exists()
    assert sweep.script_name(str(script)) == str(script) and sweep.script_name("qmix.py") == "qmix"
    torch.load(next(folder.glob("runs/*/training_state.cleanmarl")), weights_only=True)


def test_a_renamed_copy_resumes_the_runs_of_the_script_it_copies(tmp_path):
    """What makes a run resumable is its flags and state, not the file name of its script: a run of
    qmix.py goes on under a copy saved as my_qmix.py (same flags), not under qmix_lstm.py."""
    run(tmp_path, *RESUMED, "--total-timesteps", "300")
    (run_dir,) = (tmp_path / "runs").iterdir()
    resume = ["--resume", str(run_dir.relative_to(tmp_path)), "--total-timesteps", "600"]
    run(tmp_path, *resume, script=copy(tmp_path, "my_qmix.py"))
    assert torch.load(run_dir / "training_state.cleanmarl", weights_only=True)["step"] >= 600
    lstm = ROOT / "cleanmarl" / "qmix_lstm.py"
    proc = run(tmp_path, *resume[:2], "--total-timesteps", "900", script=lstm, check=False)
    one_error_line(proc, "qmix_lstm.py", "is a run of my_qmix.py: resume it with that script")
