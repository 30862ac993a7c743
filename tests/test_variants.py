"""The variants are qmix.py changed only where each one needs: the parts they share are the same source (a fix to one
script alone fails here), and qmix_memefficient.py, which keeps qmix.py's arithmetic, logs the same losses and builds
the same TD targets."""

import ast
import difflib
import importlib

import numpy as np
import pytest
import torch

from cleanmarl import qmix
from tests.test_smoke import LBF, ROOT, run, scalars

# Per variant: the top-level definitions it replaces, adds or drops, and the regions of the main block it may change,
# each from the first line holding `start` (and the comment line above it) up to the next line holding `end` (None:
# that one line). Everything else in the main block is the reference's, line for line.
CHANGES = {
    "qmix_memefficient.py": {
        "definitions": {"EpisodeBuffer", "from cleanmarl.utils.system import check_buffer_memory"},
        "main": [("rb = EpisodeBuffer(", None)],  # told what the agents see (args): it stores less
    },
    "qmix_lstm.py": {
        "definitions": {"Args", "QNetwork", "EpisodeBuffer", "run_episode"}
        | {"online_next_q_values", "sequence_inputs", "unroll", "qmix_loss"},
        "main": [("batch = rb.sample(", None)],  # whole episodes and their mask
    },
    "qmix_multienvs.py": {
        "definitions": {"Args", "VectorRollout", "log_evaluation"}
        | {"from cleanmarl.env.vector import VectorEnv, WorkerError"}
        | {"from cleanmarl.utils.system import env_seeds"},
        "main": [
            # VectorEnvs (not --eval-only); the rollout holds the envs' state
            ("kw = dict(", "        eval_env.recording = args.capture_video"),
            ("state = nets | dict(", "        saver = TrainingState("),
            ("exploration_steps = ", "    while loop.global_step"),  # + the evaluation under way
            ("episode, ep_return, info", None),  # the next episode of any env, and its epsilon
            ("# TRAIN", "            batch = rb.sample("),  # --n-epochs updates
            # how busy the workers and the learner are (charts/*)
            ('scalars["train/reward_scale"]', "            run.log(scalars, loop.global_step)"),
            ("# EVAL", "            if args.save_model:"),  # in the evaluation workers
            ("if saver.due(", "            saver.save("),  # an evaluation under way logged first
        ],
    },
}
VARIANTS = sorted(p.name for p in (ROOT / "cleanmarl").glob("qmix_*.py"))


def without_regions(lines, regions):
    """lines without each region (see CHANGES)."""
    for start, end in regions:
        first = next(i for i, line in enumerate(lines) if start in line)
        last = (
            first + 1
            if end is None
            else next(i for i in range(first + 1, len(lines)) if end in lines[i])
        )
        first -= lines[first - 1].lstrip().startswith("#")
        lines = lines[:first] + lines[last:]
    return lines


def definitions(path):
    """Top-level definitions -> their source text, comments included (Args without its docstring, which is --help's
    description), and the main block's lines."""
    text = path.read_text()
    lines = text.splitlines()
    parts, main = {}, None
    for node in ast.parse(text).body:
        first = node.lineno - 1 - len(getattr(node, "decorator_list", []))
        source = lines[first : node.end_lineno]
        if isinstance(node, ast.If):
            main = source
            continue
        if isinstance(node, ast.ClassDef) and node.name == "Args":
            doc = node.body[0]
            source = lines[first : doc.lineno - 1] + lines[doc.end_lineno : node.end_lineno]
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            name = node.name
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            name = ast.unparse(getattr(node, "target", None) or node.targets[0])
        else:  # imports
            name = ast.unparse(node)
        parts[name] = parts.get(name, "") + "\n".join(source)
    return parts, main


def test_every_variant_is_known():
    assert set(VARIANTS) <= set(CHANGES), "a new variant needs its entry in CHANGES"


@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_parts_are_the_same_source(variant):
    """Every definition qmix.py has is in the variant, character for character, unless the variant replaces or drops
    it; a variant adds only the definitions it lists."""
    reference, _ = definitions(ROOT / "cleanmarl" / "qmix.py")
    parts, _ = definitions(ROOT / "cleanmarl" / variant)
    changed = sorted(
        name for name in set(reference) | set(parts) if parts.get(name) != reference.get(name)
    )
    assert changed == sorted(CHANGES[variant]["definitions"]), (
        f"{variant} differs from qmix.py in {changed}"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_main_block_changes_only_its_regions(variant):
    _, reference = definitions(ROOT / "cleanmarl" / "qmix.py")
    _, main = definitions(ROOT / "cleanmarl" / variant)
    reference, main = (
        without_regions(lines, CHANGES[variant]["main"]) for lines in (reference, main)
    )
    assert main == reference, "\n".join(difflib.unified_diff(reference, main, lineterm=""))


# ------------------------------------------------------------------------------------------- qmix_memefficient.py

memefficient = importlib.import_module("cleanmarl.qmix_memefficient")
MPE = ["--env-name", "simple_spread_v3"]


@pytest.mark.parametrize("env_args", [LBF, MPE], ids=["lbf", "mpe"])
def test_memefficient_logs_the_same_losses(tmp_path, env_args):
    """Same seed: the same episodes sampled, the same steps in the same order, the same arithmetic."""
    args = [
        *env_args,
        "--total-timesteps",
        "2500",
        "--batch-size",
        "8",
        "--log-every",
        "1",
        "--seed",
        "3",
    ]
    losses = []
    for script in ("qmix.py", "qmix_memefficient.py"):
        (tmp_path / script).mkdir()
        run(tmp_path / script, *args, script=ROOT / "cleanmarl" / script)
        losses.append(scalars(tmp_path / script, "train/loss"))
    assert len(losses[0]) > 20 and losses[0] == losses[1]


class EndingEnv:
    """Episodes of a given length ending terminated or truncated; obs, state and masks change every step (drawn from
    the episode and the step), the reward is t + 10 * episode. The obs are the env's own: the script appends the agent
    ids and last actions."""

    n_agents, n_actions, obs_size, state_size = 2, 11, 3, 4
    input_size = obs_size + n_agents + n_actions  # the agent network's, with ids and last actions

    def __init__(self, endings):
        self.endings = iter(endings)

    @staticmethod
    def observe(episode, t):
        rng = np.random.default_rng(100 * episode + t)
        obs = rng.normal(size=(2, 3)).astype(np.float32)
        avail = rng.random((2, 11)) < 0.5
        avail[:, 0] = True
        return obs, rng.normal(size=4).astype(np.float32), avail

    def reset(self):
        self.length, self.ends_terminated = next(self.endings)
        self.episode, self.t = getattr(self, "episode", -1) + 1, 0
        return *self.observe(self.episode, 0), {}

    def step(self, actions):
        self.t += 1
        end = self.t == self.length
        reward = float(self.t + 10 * self.episode)
        ending = (end and self.ends_terminated, end and not self.ends_terminated)
        return *self.observe(self.episode, self.t), reward, *ending, {}


ENDINGS = [(1, True), (1, False), (3, False), (4, True), (6, False)]  # (length, terminated)
INPUT_SIZE = EndingEnv.input_size  # obs, id, last action


def filled_buffers(endings=ENDINGS, limit=6):
    env, args = EndingEnv(endings), qmix.Args()  # the agents see obs, agent id, last action
    sizes = (limit, env.n_agents, INPUT_SIZE, env.state_size, env.n_actions)
    buffers = (
        qmix.EpisodeBuffer(len(endings), *sizes, seed=0),
        memefficient.EpisodeBuffer(len(endings), *sizes, seed=0, args=args),
    )
    torch.manual_seed(0)
    q_network = qmix.QNetwork(INPUT_SIZE, env.n_actions, hidden_dim=8, num_layers=1)
    rng = np.random.default_rng(0)
    for _ in endings:
        episode, _, _ = qmix.run_episode(env, q_network, args, 0.5, rng)
        for rb in buffers:
            rb.add(episode)
    return buffers, q_network


def test_memefficient_td_targets_equal_qmix_on_truncated_terminated_and_length_1_episodes():
    """The same batch, key by key, and so the same TD targets: a truncated last step bootstraps from the stored final
    obs and state (CleanMARL's variant bootstraps from zero padding there), a terminated one does not bootstrap."""
    (padded, compact), q_network = filled_buffers()
    batches = [rb.sample(len(ENDINGS), "cpu") for rb in (padded, compact)]
    assert set(batches[0]) == set(batches[1])
    for key in batches[0]:
        assert batches[0][key].dtype == batches[1][key].dtype and torch.equal(
            batches[0][key], batches[1][key]
        ), key
    torch.manual_seed(1)
    mixer = qmix.QMixer(2, 4, embed_dim=8)
    targets = []
    for batch in batches:
        with torch.no_grad():
            target_next_q = q_network(batch["next_obs"])
            online_next_q = qmix.online_next_q_values(q_network, q_network(batch["obs"]), batch)
            targets.append(qmix.compute_td_target(batch, target_next_q, mixer, 0.99, online_next_q))
    assert torch.equal(targets[0], targets[1])
    batch, target = batches[1], targets[1]
    last = (
        batch["reward"] % 10
        == torch.tensor([length for length, _ in ENDINGS])[batch["reward"].long() // 10]
    )
    assert last.sum() == len(ENDINGS)
    terminated = batch["terminated"].bool()
    assert terminated.sum() == 2 and (terminated <= last).all()
    torch.testing.assert_close(target[terminated], batch["reward"][terminated])  # no bootstrap
    truncated_last = last & ~terminated
    assert (
        target[truncated_last] != batch["reward"][truncated_last]
    ).all()  # bootstraps from the final obs
    assert (
        batch["next_obs"][truncated_last][..., :3] != 0
    ).all()  # the stored final obs, not zeros


# ------------------------------------------------------------------------------------------- every script's update


def by_hand(module, batch_episodes, nets, gamma, td_lambda, double_q):
    """The update's targets and loss written per episode, as the papers do: y_t = r_t + gamma (1 - terminated_t)
    Q_tot^-(s_{t+1}, u'), u' = argmax over available actions of the online (double Q) or target network at t + 1;
    G_t = r_t + gamma (1 - terminated_t) ((1 - lambda) Q_tot^-(t + 1) + lambda G_{t+1}), G = y at the last step.
    Recurrent agents unroll over the episode alone, from o_0."""
    q_network, mixer, target_q_network, target_mixer = nets
    targets, errors = [], []
    for ep in batch_episodes:
        obs, next_obs = (torch.from_numpy(ep[k]) for k in ("obs", "next_obs"))
        if hasattr(module, "unroll"):  # o_0 .. o_T through the GRU: step t + 1 is index t + 1
            sequence = torch.cat([obs[:1], next_obs])[None]
            online, target = (net(sequence)[0][0] for net in (q_network, target_q_network))
            q_now, online_next, target_next = online[:-1], online[1:], target[1:]
        else:
            q_now, online_next, target_next = (
                q_network(obs),
                q_network(next_obs),
                target_q_network(next_obs),
            )
        avail = torch.from_numpy(ep["next_avail_actions"])
        chooser = online_next if double_q else target_next
        chosen = chooser.masked_fill(~avail, -torch.inf).argmax(-1, keepdim=True)
        next_q_tot = target_mixer(
            target_next.gather(-1, chosen).squeeze(-1), torch.from_numpy(ep["next_state"])
        )
        reward, terminated = (
            torch.from_numpy(ep["reward"]),
            torch.from_numpy(ep["terminated"]).float(),
        )
        returns, following = [], None
        for t in reversed(range(len(reward))):
            bootstrap = (
                next_q_tot[t]
                if following is None
                else (1 - td_lambda) * next_q_tot[t] + td_lambda * following
            )
            following = reward[t] + gamma * (1 - terminated[t]) * bootstrap
            returns.insert(0, following)
        q_taken = q_now.gather(-1, torch.from_numpy(ep["actions"])[..., None]).squeeze(-1)
        errors.append(mixer(q_taken, torch.from_numpy(ep["state"])) - torch.stack(returns))
        targets += returns
    return torch.stack(targets), torch.cat(errors).pow(2).mean()


@pytest.mark.parametrize("double_q", [True, False], ids=["double_q", "no_double_q"])
@pytest.mark.parametrize("script", ["qmix.py", *VARIANTS])
def test_the_update_of_every_script_is_each_episodes_own(script, double_q):
    """Each script's qmix_loss (the lines its main loop runs) on a sampled batch of mixed lengths (1 to 6 steps, ended
    terminated or truncated: the padded batch has padding in most rows) gives every real step the target of its own
    episode written by hand, and the loss their mean squared error."""
    module = qmix if script == "qmix.py" else importlib.import_module(f"cleanmarl.{script[:-3]}")
    env, limit, acting_args = EndingEnv(ENDINGS), 6, qmix.Args()  # obs, agent id, last action
    sizes = (limit, env.n_agents, INPUT_SIZE, env.state_size, env.n_actions)
    extra = {"args": acting_args} if script == "qmix_memefficient.py" else {}
    rb = module.EpisodeBuffer(len(ENDINGS), *sizes, seed=0, **extra)
    torch.manual_seed(0)
    acting = qmix.QNetwork(INPUT_SIZE, env.n_actions, hidden_dim=8, num_layers=1)
    episodes, rng = [], np.random.default_rng(0)
    for _ in ENDINGS:
        episode, _, _ = qmix.run_episode(env, acting, acting_args, 0.5, rng)
        rb.add(episode)
        episodes.append(episode)
    q_network, target_q_network = (
        module.QNetwork(INPUT_SIZE, env.n_actions, 8, 1) for _ in range(2)
    )
    mixer, target_mixer = (
        qmix.QMixer(env.n_agents, env.state_size, 8) for _ in range(2)
    )  # targets differ
    nets = (q_network, mixer, target_q_network, target_mixer)
    args = module.Args(gamma=0.9, td_lambda=0.6, double_q=double_q)
    batch = rb.sample(len(ENDINGS), "cpu")
    firsts = batch["reward"].reshape(-1)[
        batch["reward"].reshape(-1) % 10 == 1
    ]  # each episode's first step, in order
    sampled = [episodes[int(first) // 10] for first in firsts]
    assert [len(ep["reward"]) for ep in sampled] == batch["mask"].sum(1).tolist()
    loss, _, td_target = module.qmix_loss(batch, args, *nets)
    with torch.no_grad():
        expected_targets, expected_loss = by_hand(module, sampled, nets, 0.9, 0.6, double_q)
    torch.testing.assert_close(td_target, expected_targets)
    torch.testing.assert_close(loss, expected_loss)


@pytest.mark.parametrize("script", ["qmix.py", *VARIANTS])
def test_a_diverged_network_still_acts_on_available_actions(script):
    """A run whose weights went NaN (a diverged run) acts on available actions all the same."""
    module = qmix if script == "qmix.py" else importlib.import_module(f"cleanmarl.{script[:-3]}")
    torch.manual_seed(0)
    q_network = module.QNetwork(7, 5, 8, 0 if script == "qmix_lstm.py" else 1)
    with torch.no_grad():
        next(q_network.parameters()).fill_(float("nan"))
        obs = torch.zeros(1, 1, 2, 7) if script == "qmix_lstm.py" else torch.zeros(2, 7)
        q_values = q_network(obs)[0][0, 0] if script == "qmix_lstm.py" else q_network(obs)
    assert q_values.isnan().all()
    avail = np.array([[False, True, False, True, True], [False, False, True, False, False]])
    actions = module.select_actions(q_values.numpy(), avail, 0.0, None)
    assert avail[[0, 1], actions].all()
