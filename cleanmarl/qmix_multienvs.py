# Docs: https://github.com/cleanmarl/cleanmarl/blob/main/docs/qmix_multienvs.md
# qmix.py stepping --num-envs envs at once in worker processes; --n-epochs updates.
import copy
import os
import random
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from cleanmarl.env import make_env
from cleanmarl.env.vector import VectorEnv, WorkerError
from cleanmarl.utils import (
    Run,
    TrainingState,
    buffer_arrays,
    load_networks,
    print_evaluation,
    startup_args,
    torch_device,
)
from cleanmarl.utils.system import env_seeds


@dataclass
class Args:
    """QMIX (Rashid et al., 2018) stepping --num-envs envs at once, each in a worker process.

    Example: python cleanmarl/qmix_multienvs.py --env-name 2s3z --num-envs 8 --seed 1
    """

    # Experiment
    exp_name: str = os.path.basename(__file__)[:-3]
    """name of this experiment, part of the run name"""
    seed: int = 1
    """seed of envs, exploration, buffer sampling and network weights"""
    total_timesteps: int = 1_000_000
    """length of training (env steps)"""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, mps, or auto"""
    torch_threads: int = 1
    """CPU threads of torch and numpy's BLAS"""
    capture_video: bool = False
    """video of every --video-every-th evaluation's first episode"""
    video_every: int = 10
    """video of every video_every-th evaluation (evaluations)"""
    save_model: bool = False
    """save a checkpoint at every evaluation"""
    load_model: str = ""
    """checkpoint to start from, or to evaluate with --eval-only"""
    eval_only: bool = False
    """only evaluate --load-model greedily, then exit"""
    resume: str = ""
    """run directory to continue exactly from its saved training state"""
    checkpoint_every: float = 5.0
    """save the training state every checkpoint_every minutes"""
    # Logging
    log_every: int = 10
    """log rollout and train metrics every log_every episodes"""
    use_wnb: bool = False
    """also log to Weights & Biases"""
    wnb_project: str = ""
    """Weights & Biases project"""
    wnb_entity: str = ""
    """Weights & Biases entity"""
    progress_bar: bool = True
    """a progress bar on a terminal, else a status line a minute"""
    # Environment
    env_type: Literal["smaclite", "pz", "lbf", "gym"] | None = None
    """env family; default: told from --env-name"""
    env_name: str = "Foraging-8x8-2p-2f-coop-v3"
    """SMAClite map, LBF id, PettingZoo env or gymnasium id (module:EnvId)"""
    env_family: Literal["mpe", "butterfly", "sisl"] = "mpe"
    """PettingZoo family (--env-type pz)"""
    agent_ids: bool = True
    """append a one-hot agent id to each observation"""
    last_action: bool = True
    """append each agent's previous action, one-hot, to its observation"""
    time_limit: int | None = None
    """episode limit (env steps); default: the env's own"""
    num_envs: int | Literal["auto"] = "auto"
    """envs stepped at once, each in a worker process; auto: one a core but the learner's, >= 12"""
    # Algorithm
    buffer_size: int = 5000
    """replay buffer capacity (episodes)"""
    batch_size: int = 32
    """episodes per gradient step"""
    gamma: float = 0.99
    """discount factor"""
    td_lambda: float = 0.6
    """lambda of the TD(lambda) targets; 0: one-step targets"""
    train_freq: int = 1
    """one gradient step every train_freq episodes"""
    learning_rate: float = 1e-3
    """learning rate"""
    normalize_reward: bool = True
    """divide rewards by the std of all rewards so far, rescaling Q_tot with it"""
    clip_gradients: float = -1
    """clip the gradient norm at this value; <= 0: no clipping"""
    double_q: bool = True
    """online network picks the next action, target network values it"""
    n_epochs: int = 1
    """gradient steps per train step (1: qmix.py's)"""
    overlap: bool = False
    """opt-in (changes learning): envs step by halves, one while the learner works; stale acting"""
    # Exploration
    start_e: float = 1.0
    """epsilon at the start"""
    end_e: float = 0.025
    """epsilon at the end of the schedule"""
    exploration_fraction: float = 0.05
    """fraction of total_timesteps over which epsilon decays linearly"""
    # Networks
    hidden_dim: int = 64
    """width of the agent network's hidden layers"""
    num_layers: int = 1
    """hidden layers of the agent network after its input layer"""
    mixer_embed_dim: int = 32
    """width of the mixing network's hidden layer"""
    # Target network
    target_network_update_freq: int = 200
    """update the target networks every this many episodes"""
    polyak: float = 1.0
    """target <- polyak * online + (1 - polyak) * target"""
    # Evaluation
    eval_steps: int = 50
    """evaluate greedily every eval_steps episodes (not env steps)"""
    num_eval_ep: int = 5
    """episodes per evaluation"""


CHECKPOINT_FLAGS = (  # --load-model takes these
    "env_type env_name env_family agent_ids time_limit last_action hidden_dim num_layers"
    " mixer_embed_dim"
).split()
CHECKPOINT_NETS = ("q_network", "mixer", "target_q_network", "target_mixer")


class QNetwork(nn.Module):
    """One network for all agents: obs (+ id, last action) -> a Q-value per action."""

    def __init__(self, obs_size, n_actions, hidden_dim, num_layers):
        super().__init__()
        layers = [nn.Linear(obs_size, hidden_dim), nn.ReLU()]
        for _ in range(num_layers):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, n_actions))

    def forward(self, obs):  # [..., N, obs_size] -> [..., N, A]
        return self.net(obs)


class QMixer(nn.Module):
    """Q_tot = w2 . elu(w1 q + b1) + V(s), w1 and w2 from hypernetworks of the state; abs() keeps
    dQ_tot/dQ_i >= 0, so each agent's argmax is the joint argmax (QMIX, Sec. 4)."""

    def __init__(self, n_agents, state_size, embed_dim):
        super().__init__()
        self.hyper_w1 = nn.Linear(state_size, n_agents * embed_dim)
        self.hyper_b1 = nn.Linear(state_size, embed_dim)
        self.hyper_w2 = nn.Linear(state_size, embed_dim)
        v = [nn.Linear(state_size, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1)]
        self.hyper_b2 = nn.Sequential(*v)  # V(s)

    def forward(self, q_agents, state):  # q_agents [..., N], state [..., S] -> q_tot [...]
        w1 = self.hyper_w1(state).abs().view(*q_agents.shape, -1)  # [..., N, E]
        hidden = F.elu((q_agents.unsqueeze(-1) * w1).sum(-2) + self.hyper_b1(state))  # [..., E]
        w2 = self.hyper_w2(state).abs()
        return (hidden * w2).sum(-1) + self.hyper_b2(state).squeeze(-1)

    @torch.no_grad()
    def rescale(self, factor):
        """Q_tot *= factor for every input (Pop-Art's output preservation; --normalize-reward)."""
        for p in (*self.hyper_w2.parameters(), *self.hyper_b2[-1].parameters()):
            p.mul_(factor)


class RunningStats:
    """Std (Chan et al.'s parallel update) and largest |value| of all values so far."""

    def __init__(self):
        self.count, self.mean, self.m2, self.max_abs = 0, 0.0, 0.0, 0.0

    def update(self, x):
        self.max_abs = max(self.max_abs, float(np.max(np.abs(x))))
        n, mean = len(x), float(np.mean(x))
        delta, total = mean - self.mean, self.count + n
        self.m2 += float(np.sum((x - mean) ** 2)) + delta**2 * self.count * n / total
        self.mean, self.count = self.mean + delta * n / total, total

    @property
    def std(self):  # 0 while all values are equal up to rounding
        std = (self.m2 / max(self.count, 1)) ** 0.5
        return std if std > 1e-6 * self.max_abs else 0.0


def episode_fields(t, n, obs_size, state_size, n_actions):
    """An episode of at most t steps: name -> (shape, dtype)."""
    f32 = np.float32
    obs, state = ((t, n, obs_size), f32), ((t, state_size), f32)
    fields = dict(obs=obs, next_obs=obs, state=state, next_state=state, actions=((t, n), np.int64))
    fields |= dict(reward=((t,), f32), terminated=((t,), f32))
    return fields | dict(next_avail_actions=((t, n, n_actions), bool))


class EpisodeBuffer:
    """Whole episodes in arrays [buffer_size, episode_limit, ...] and a mask of their real steps."""

    def __init__(self, buffer_size, episode_limit, n_agents, obs_size, state_size, n_actions, seed):
        fields = episode_fields(episode_limit, n_agents, obs_size, state_size, n_actions)
        # zeros taken from memory as they are written; an error now if all would not fit
        self.fields = buffer_arrays(buffer_size, fields | dict(mask=((episode_limit,), bool)))
        self.mask = self.fields.pop("mask")
        self.buffer_size, self.pos, self.size = buffer_size, 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, episode):  # name -> [T, ...]
        for key, array in self.fields.items():
            array[self.pos, : len(episode[key])] = episode[key]
        self.mask[self.pos] = np.arange(self.mask.shape[1]) < len(episode["reward"])
        self.pos = (self.pos + 1) % self.buffer_size
        self.size = min(self.size + 1, self.buffer_size)

    def state_dict(self):  # real steps only
        mask = self.mask[: self.size]
        steps = {k: v[: self.size][mask] for k, v in self.fields.items()}
        return dict(steps=steps, mask=mask, pos=self.pos, rng=self.rng.bit_generator.state)

    def load_state_dict(self, saved):
        self.size, self.pos = len(saved["mask"]), saved["pos"]
        self.mask[: self.size] = saved["mask"]
        for k, v in self.fields.items():
            v[: self.size][self.mask[: self.size]] = saved["steps"][k]
        self.rng.bit_generator.state = saved["rng"]

    def sample(self, batch_size, device):
        """Whole episodes -> their real steps [M, ...], and "mask" [B, T] of where they were."""
        idx = self.rng.choice(self.size, size=batch_size, replace=False)
        episodes, t = np.nonzero(self.mask[idx])
        batch = {k: torch.from_numpy(v[idx[episodes], t]) for k, v in self.fields.items()}
        batch["mask"] = torch.from_numpy(self.mask[idx, : t.max() + 1])  # [B, T]
        return {k: v.to(device) for k, v in batch.items()}


def agent_inputs(obs, actions, n_actions, args):
    """What each agent's network sees (QMIX, Sec. 4): its obs [..., N, O], its one-hot id
    (--agent-ids) and its previous action one-hot (--last-action; zeros at t = 0: actions None)."""
    inputs, shape = [obs], obs.shape[:-1]
    if args.agent_ids:
        inputs.append(np.broadcast_to(np.eye(shape[-1], dtype=np.float32), (*shape, shape[-1])))
    if args.last_action:  # row n_actions of the eye: zeros
        one_hot = np.eye(n_actions + 1, n_actions, dtype=np.float32)
        inputs.append(one_hot[np.full(shape, n_actions) if actions is None else actions])
    return np.concatenate(inputs, axis=-1)


def linear_schedule(start_e, end_e, duration, t):
    return max(end_e, start_e + (end_e - start_e) * t / duration)


def select_actions(q_values, avail_actions, epsilon, rng):
    """Per-agent epsilon-greedy over the available actions: q_values, avail_actions [N, A]."""
    greedy = np.where(avail_actions, q_values, -np.inf).argmax(-1)
    if epsilon <= 0:
        return greedy
    random_actions = np.where(avail_actions, rng.random(avail_actions.shape), -1.0).argmax(-1)
    return np.where(rng.random(len(greedy)) < epsilon, random_actions, greedy)


def compute_td_target(batch, target_next_q, target_mixer, gamma, online_next_q=None):
    """r + gamma (1 - terminated) Q_tot^-(s', u'), u' the argmax over available actions (of
    online_next_q: double Q). A time limit is not terminal (pymarl#11). -> td_target [...]"""
    chooser = target_next_q if online_next_q is None else online_next_q
    chooser = chooser.masked_fill(~batch["next_avail_actions"], -torch.inf)  # [..., N, A]
    next_actions = chooser.argmax(-1, keepdim=True)
    next_q = target_next_q.gather(-1, next_actions).squeeze(-1)  # [..., N]
    target_q_tot = target_mixer(next_q, batch["next_state"])
    return batch["reward"] + gamma * (1.0 - batch["terminated"]) * target_q_tot


@torch.no_grad()
def online_next_q_values(q_network, q_values, batch):
    """q_network(next_obs), reusing q_values where next_obs is the next row's obs."""
    fresh = (batch["next_obs"] != batch["obs"].roll(-1, 0)).flatten(1).any(1)
    next_q = q_values.roll(-1, 0)
    next_q[fresh] = q_network(batch["next_obs"][fresh])
    return next_q


def lambda_returns(td_target, reward, mask, gamma, td_lambda):
    """PyMARL2's TD(lambda): G_t = y_t + lambda (gamma G_t+1 - y_t + r_t) while t + 1 is real, else
    y_t (y: one-step targets). So G_t = a_t + lambda gamma G_t+1 with a_t = y_t - lambda (y_t - r_t)
    [t + 1 real]: G = a @ P.T, P[t, k] = (lambda gamma)^(k - t) for k >= t. [B, T] -> [B, T]"""
    next_real = F.pad(mask[:, 1:], (0, 1))
    a = torch.where(mask, td_target - td_lambda * next_real * (td_target - reward), 0.0)
    k = torch.arange(mask.shape[1], device=mask.device)
    powers = (td_lambda * gamma) ** (k[None] - k[:, None]).clamp(min=0) * (k[None] >= k[:, None])
    powers[powers < torch.finfo(powers.dtype).tiny] = 0.0  # subnormals are slow
    return a @ powers.T


def qmix_loss(batch, args, q_network, mixer, target_q_network, target_mixer):
    """Mean squared TD(lambda) error of Q_tot -> loss, q_taken [M, N], td_target [M]."""
    q_values = q_network(batch["obs"])  # [M, N, A]
    q_taken = q_values.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # [M, N]
    q_tot = mixer(q_taken, batch["state"])  # [M]
    with torch.no_grad():
        target_next_q = target_q_network(batch["next_obs"])
        online_next_q = online_next_q_values(q_network, q_values, batch) if args.double_q else None
        td_target = compute_td_target(batch, target_next_q, target_mixer, args.gamma, online_next_q)
        if args.td_lambda > 0:  # along each episode
            mask = batch["mask"]
            flat = (td_target, batch["reward"])  # [M] -> [B, T]
            td_target, reward = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in flat)
            td_target = lambda_returns(td_target, reward, mask, args.gamma, args.td_lambda)[mask]
    return F.mse_loss(q_tot, td_target), q_taken, td_target


class VectorRollout:
    """Steps the envs (with --overlap by halves in turn), hands out episodes as they end (docs)."""

    def __init__(self, envs, args, rng):
        self.envs, self.args, self.rng = envs, args, rng
        self.steps, self.finished = [[] for _ in range(envs.num_envs)], []
        self.epsilons, self.acting = np.full(envs.num_envs, np.nan), None
        halves = 2 if args.overlap and envs.num_envs > 1 else 1
        self.groups = [g.tolist() for g in np.array_split(np.arange(envs.num_envs), halves)]
        self.actions, self.obs, self.turn = [None] * halves, [None] * halves, 0
        self.pending = {}  # half -> its step's answer, taken by state_dict()

    def send(self, g, q_network, epsilon):  # epsilon: for the episodes starting now
        envs, self.acting = self.groups[g], self.acting or self.envs.reset()
        obs, _, avail_actions = (x[envs] for x in self.acting)
        # what the agents see: their last step's next_obs; at an episode's first, no last action
        obs = agent_inputs(obs, None, self.envs.n_actions, self.args)  # [E, N, input]
        self.obs[g] = np.stack(
            [self.steps[i][-1]["next_obs"] if self.steps[i] else obs[j] for j, i in enumerate(envs)]
        )
        self.epsilons[envs] = np.nan_to_num(self.epsilons[envs], nan=epsilon)
        device = next(q_network.parameters()).device
        q_values = q_network(torch.from_numpy(self.obs[g]).to(device)).cpu().numpy()  # [E, N, A]
        per_env = zip(q_values, avail_actions, self.epsilons[envs], strict=True)
        self.actions[g] = np.stack([select_actions(*x, self.rng) for x in per_env])
        self.envs.step_async(self.actions[g], envs)

    def collect(self):  # the half whose turn it is
        keys = "obs state actions next_obs next_state next_avail_actions reward terminated".split()
        g, self.turn = self.turn, (self.turn + 1) % len(self.groups)
        envs, actions, self.actions[g] = self.groups[g], self.actions[g], None
        state = self.acting[1][envs]
        # an ended env has reset: acting starts its next episode
        out, acting = self.pending.pop(g, None) or self.envs.step_wait(envs)
        for whole, part in zip(self.acting, acting, strict=True):
            whole[envs] = part
        next_obs = agent_inputs(out[0], actions, self.envs.n_actions, self.args)
        step = dict(zip(keys, (self.obs[g], state, actions, next_obs, *out[1:]), strict=False))
        for j, i in enumerate(envs):
            self.steps[i].append({k: v[j] for k, v in step.items()})
            if out[4][j] or out[5][j]:  # terminated or truncated
                self.finished.append((self.steps[i], out[6][j], self.epsilons[i]))
                self.steps[i], self.epsilons[i] = [], np.nan

    @torch.inference_mode()  # acting records no graph
    def next_episode(self, q_network, epsilon):
        """The next episode to end. -> as run_episode, and its epsilon"""
        try:
            while not self.finished:
                for g in [g for g, actions in enumerate(self.actions) if actions is None]:
                    self.send(g, q_network, epsilon)
                self.collect()
            last = (self.turn - 1) % len(self.groups)  # the half just collected
            if self.args.overlap and len(self.finished) == 1 and self.actions[last] is None:
                self.send(last, q_network, epsilon)  # the next call steps it: send it now
        except WorkerError as e:
            sys.exit(f"{os.path.basename(__file__)}: error: {e}")
        steps, info, epsilon = self.finished.pop(0)
        episode = {k: np.stack([s[k] for s in steps]) for k in steps[0]}
        ep_return = float(sum(episode["reward"]))  # float64, as run_episode's
        episode |= {k: episode[k].astype(np.float32) for k in ("reward", "terminated")}
        return episode, ep_return, info, float(epsilon)

    def state_dict(self):
        # the halves under way answer now (for start_states), collect() takes it later, in turn:
        # a run saved goes on as unsaved
        keys = "steps epsilons finished turn acting actions obs pending".split()
        try:
            for g, envs in enumerate(self.groups):
                if self.actions[g] is not None and g not in self.pending:
                    self.pending[g] = self.envs.step_wait(envs)
            return {k: getattr(self, k) for k in keys} | {"starts": self.envs.start_states()}
        except WorkerError as e:
            sys.exit(f"{os.path.basename(__file__)}: error: {e}")

    def load_state_dict(self, saved):  # each env replays its episode so far (docs)
        vars(self).update(saved)
        replay = [[s["actions"] for s in steps] for steps in self.steps]
        for g, (out, _) in self.pending.items():  # a step answered, not collected: replayed too,
            for j, i in enumerate(self.groups[g]):  # unless it ended (its worker has reset)
                replay[i] = [] if out[4][j] or out[5][j] else [*replay[i], self.actions[g][j]]
        self.envs.restore(self.starts, replay)


@torch.inference_mode()  # acting records no graph
def run_episode(env, q_network, args, epsilon, rng):
    """Play one episode with q_network. -> its steps (name -> [T, ...]), return, info"""
    device = next(q_network.parameters()).device
    obs, state, avail_actions, info = env.reset()
    obs, ep_return, steps = agent_inputs(obs, None, env.n_actions, args), 0.0, []
    terminated = truncated = False
    while not (terminated or truncated):
        q_values = q_network(torch.from_numpy(obs).to(device)).cpu().numpy()  # [N, A]
        actions = select_actions(q_values, avail_actions, epsilon, rng)
        next_obs, next_state, avail_actions, reward, terminated, truncated, info = env.step(actions)
        next_obs = agent_inputs(next_obs, actions, env.n_actions, args)
        step = dict(obs=obs, next_obs=next_obs, state=state, next_state=next_state)
        step |= dict(actions=actions, reward=np.float32(reward), terminated=np.float32(terminated))
        steps.append(step | dict(next_avail_actions=avail_actions))
        obs, state, ep_return = next_obs, next_state, ep_return + reward
    return {k: np.stack([step[k] for step in steps]) for k in steps[0]}, ep_return, info


def evaluate(env, q_network, args):
    """--num-eval-ep greedy episodes (run_episode's)."""
    return [run_episode(env, q_network, args, 0.0, None) for _ in range(args.num_eval_ep)]


def log_evaluation(run, step, eval_envs):
    """Record the evaluation started at env step `step` once played. -> None"""
    try:
        run.record_evaluation(step, eval_envs.play_wait(), eval_envs)
    except WorkerError as e:
        sys.exit(f"{os.path.basename(__file__)}: error: {e}")


@dataclass
class Loop:
    """What the loop carries from pass to pass, saved and restored whole by --resume."""

    global_step: int = 0  # env steps
    num_episodes: int = 0
    num_updates: int = 0
    reward_scale: float | None = None  # rewards / reward_scale; None: no scale yet


if __name__ == "__main__":
    # SETUP
    try:  # a user mistake ends the run with one line
        args, resume, checkpoint = startup_args(tyro.cli, Args, CHECKPOINT_FLAGS, CHECKPOINT_NETS)
        device = torch_device(args.device, args.torch_threads)
        random.seed(args.seed)  # the global generators: env libraries that use them
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)  # network weights
        # exploration and buffer sampling: streams sharing no bits with the envs' default_rng(seed)
        rng, buffer_rng = map(np.random.default_rng, np.random.SeedSequence(args.seed).spawn(2))
        kw = dict(env_family=args.env_family, time_limit=args.time_limit)
        auto = args.num_envs == "auto"  # saved as the number it picks, which --resume keeps
        args.num_envs = VectorEnv.auto_num_envs() if auto else args.num_envs
        name, n_eval = (args.env_type, args.env_name), min(args.num_envs, args.num_eval_ep)
        if args.eval_only:  # no workers
            env = eval_env = make_env(*name, seed=env_seeds(args.seed, 1, 1)[0], **kw)
        else:  # seeds: SeedSequence children (docs)
            if auto:
                print(f"--num-envs auto: {args.num_envs}")
            env = VectorEnv(*name, args.num_envs, env_seeds(args.seed, args.num_envs, 0), **kw)
            eval_env = VectorEnv(*name, n_eval, env_seeds(args.seed, n_eval, 1), **kw)
        eval_env.recording = args.capture_video  # raises if it cannot draw
        obs = np.zeros((env.n_agents, env.obs_size), np.float32)
        obs_size = agent_inputs(obs, None, env.n_actions, args).shape[-1]  # the network's input
        sizes = (env.episode_limit, env.n_agents, obs_size, env.state_size, env.n_actions)
        q_network = QNetwork(obs_size, env.n_actions, args.hidden_dim, args.num_layers).to(device)
        mixer = QMixer(env.n_agents, env.state_size, args.mixer_embed_dim).to(device)
        target_q_network, target_mixer = copy.deepcopy(q_network), copy.deepcopy(mixer)
        nets = dict(q_network=q_network, mixer=mixer, target_q_network=target_q_network)
        nets["target_mixer"] = target_mixer
        if args.normalize_reward and not hasattr(mixer, "rescale"):
            raise ValueError("--normalize-reward needs mixer.rescale(); or --no-normalize-reward")
        if checkpoint:  # Q_tot in units of rewards / its reward_scale
            load_networks(nets, checkpoint, f"--load-model {args.load_model!r}")
        if args.eval_only:
            episodes = evaluate(eval_env, q_network, args)
            sys.exit(print_evaluation(args.load_model, eval_env, episodes))
        rb = EpisodeBuffer(args.buffer_size, *sizes, buffer_rng)
        run = Run(args, resume)  # runs/{env_name}__{exp_name}__{seed}__{time}
        params = [*q_network.parameters(), *mixer.parameters()]
        target_params = [*target_q_network.parameters(), *target_mixer.parameters()]
        optimizer = torch.optim.Adam(params, lr=args.learning_rate, fused=True)
        reward_stats = RunningStats()
        loop = Loop(reward_scale=checkpoint and checkpoint["reward_scale"])
        # all --resume restores (a stateful object left out is refused)
        state = nets | dict(optimizer=optimizer, rb=rb, reward_stats=reward_stats, rng=rng)
        rollout = VectorRollout(env, args, rng)
        state |= dict(loop=loop, env=rollout, eval_env=eval_env)
        saver = TrainingState(run, args, state, resume, globals())
    except ValueError as e:  # EnvError is one
        sys.exit(f"{os.path.basename(__file__)}: error: {e}")
    exploration_steps = args.exploration_fraction * args.total_timesteps
    pending_eval = None  # the step of an evaluation under way
    while loop.global_step < args.total_timesteps:
        # ROLLOUT: one epsilon for the whole episode
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, loop.global_step)
        episode, ep_return, info, epsilon = rollout.next_episode(q_network, epsilon)
        rb.add(episode)
        reward_stats.update(episode["reward"])
        loop.global_step += len(episode["reward"])
        loop.num_episodes += 1
        run.add({"rollout/ep_reward": ep_return, "rollout/ep_length": len(episode["reward"])})
        run.add({"rollout/battle_won": info.get("battle_won")})  # None: not logged

        # TRAIN
        train = rb.size >= args.batch_size and loop.num_episodes % args.train_freq == 0
        for _ in range(args.n_epochs if train else 0):
            batch = rb.sample(args.batch_size, device)  # the real steps of B episodes: [M, ...]
            # rewards / their std, Q_tot rescaled with it (Pop-Art, van Hasselt et al., 2016)
            if args.normalize_reward and (reward_stats.std > 0 or reward_stats.mean != 0):
                if loop.reward_scale is not None:
                    for m in (mixer, target_mixer):
                        m.rescale(loop.reward_scale / (reward_stats.std or 1.0))
                loop.reward_scale = reward_stats.std or 1.0
            batch["reward"] = batch["reward"] / (loop.reward_scale or 1.0)
            loss, q_taken, td_target = qmix_loss(batch, args, **nets)
            logs = dict(q_taken_mean=q_taken.mean(), target_mean=td_target.mean())  # train/*
            optimizer.zero_grad()
            loss.backward()
            max_norm = args.clip_gradients if args.clip_gradients > 0 else torch.inf
            grads = nn.utils.clip_grad_norm_(params, max_norm)  # the norm before clipping
            optimizer.step()
            loop.num_updates += 1
            logs |= dict(loss=loss, grads=grads)
            run.add({f"train/{k}": v.detach() for k, v in logs.items()})

        # TARGET
        if loop.num_episodes % args.target_network_update_freq == 0:
            with torch.no_grad():
                torch._foreach_lerp_(target_params, params, args.polyak)

        # LOG
        if loop.num_episodes % args.log_every == 0:
            scalars = {"rollout/epsilon": epsilon, "rollout/num_episodes": loop.num_episodes}
            scalars["train/num_updates"] = loop.num_updates
            scalars["train/reward_scale"] = loop.reward_scale or 1.0
            # the workers' busy share and the learner's waiting share, in the status line too
            scalars |= {f"charts/{k}": v for k, v in env.load().items()}
            run.log(scalars, loop.global_step)  # + the means of what run.add() took, charts/SPS

        # EVAL: in the evaluation workers, logged once done
        due = loop.num_episodes % args.eval_steps == 0 or loop.global_step >= args.total_timesteps
        if pending_eval is not None and (due or eval_env.play_ready()):  # one at a time
            pending_eval = log_evaluation(run, pending_eval, eval_env)
        if due:
            eval_env.recording = run.video_due()  # --capture-video
            greedy = (copy.deepcopy(q_network).cpu(), args, 0.0, None)  # run_episode's arguments
            eval_env.play_async(run_episode, greedy, args.num_eval_ep)
            pending_eval = loop.global_step
            if args.save_model:
                run.save_model(nets, loop.reward_scale or 1.0, loop.global_step)

        # SAVE: the training state, every --checkpoint-every minutes
        if saver.due(end=loop.global_step >= args.total_timesteps):
            if pending_eval is not None:  # the state holds no evaluation under way
                pending_eval = log_evaluation(run, pending_eval, eval_env)
            saver.save(loop.global_step)
        if saver.stopping:
            break

    run.close((env, eval_env))
    sys.exit(saver.stopped(loop.global_step))  # 128 + signal when stopped early, else 0
