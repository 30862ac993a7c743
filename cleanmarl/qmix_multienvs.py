# Docs: https://github.com/cleanmarl/cleanmarl/blob/main/docs/qmix_multienvs.md
# qmix.py collecting episodes from --num-envs envs stepped at once in worker processes; --n-epochs updates per episode.
import copy
import os
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from cleanmarl import harness
from cleanmarl.env import make_env, resolve_env_type
from cleanmarl.env.vector import VectorEnv, WorkerError

PROG = os.path.basename(__file__)  # names the script in its error lines


@dataclass
class Args:
    """QMIX (Rashid et al., ICML 2018) collecting from --num-envs envs at once, each in a worker process (docs/qmix_multienvs.md).

    Example: python cleanmarl/qmix_multienvs.py --env-name 2s3z --num-envs 8 --seed 1 --save-model
    """

    # Experiment
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment, part of the run name (no '/')"""
    seed: int = 1
    """seed of envs, exploration, buffer sampling and network weights (0 <= seed < 2**31)"""
    total_timesteps: int = 1_000_000
    """length of training (env steps)"""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, mps, or auto (cuda when available)"""
    torch_threads: int = 1
    """CPU threads for torch and numpy's BLAS (tiny nets: one thread beats more; see docs)"""
    capture_video: bool = False
    """draw the first greedy episode of every --video-every-th evaluation (runs/{run_name}/videos/, TensorBoard, W&B)"""
    video_every: int = 10
    """with --capture-video: record every video_every-th evaluation, the first included (evaluations)"""
    save_model: bool = False
    """save networks, targets and flags to runs/{run_name}/{exp_name}.cleanmarl_model at every evaluation"""
    load_model: str = ""
    """checkpoint to start from, or to evaluate with --eval-only; its env and network flags are used"""
    eval_only: bool = False
    """only evaluate the model given by --load-model greedily, then exit"""
    resume: str = ""
    """run directory to continue exactly where its training state was saved, with its flags (docs: Resume)"""
    checkpoint_every: float = 5.0
    """save the whole training state to the run directory every checkpoint_every minutes, at the end and when stopped"""
    # Logging
    log_every: int = 10
    """log rollout and train metrics every log_every training episodes (episodes)"""
    use_wnb: bool = False
    """also log to Weights & Biases (sync_tensorboard)"""
    wnb_project: str = ""
    """Weights & Biases project"""
    wnb_entity: str = ""
    """Weights & Biases entity"""
    progress_bar: bool = True
    """show progress: a tqdm bar when stderr is a terminal, else one status line a minute"""
    # Environment
    env_type: Literal["smaclite", "pz", "lbf", "gym"] | None = None
    """env family: smaclite, pz (PettingZoo), lbf, gym (tuple-space gymnasium id); default: told from --env-name"""
    env_name: str = "Foraging-8x8-2p-2f-coop-v3"
    """SMAClite map (3m), LBF id, PettingZoo env (simple_spread_v3), gymnasium id ("module:EnvId" imports module)"""
    env_family: Literal["mpe", "butterfly", "sisl"] = "mpe"
    """PettingZoo family, only with --env-type pz"""
    agent_ids: bool = True
    """append a one-hot agent id to each observation (agents share one network)"""
    last_action: bool = True
    """append each agent's previous action, one-hot, to its observation (QMIX paper's agent input; docs)"""
    time_limit: int | None = None
    """episode limit (env steps); default: the env's own (SMAC map limit, LBF 50, MPE 25)"""
    num_envs: int = 4
    """envs stepped at once, each in its own worker process, env i seeded with seed + i (1 <= num_envs < 10000)"""
    # Algorithm
    buffer_size: int = 5000
    """replay buffer capacity (episodes)"""
    batch_size: int = 32
    """episodes per gradient step (episodes; PyMARL/EPyMARL: 32)"""
    gamma: float = 0.99
    """discount factor"""
    td_lambda: float = 0.6
    """lambda of the TD(lambda) targets over each sampled episode, in [0, 1] (PyMARL2: 0.6); 0: one-step targets"""
    train_freq: int = 1
    """one gradient step every train_freq training episodes (episodes)"""
    optimizer: Literal["Adam", "RMSprop"] = "Adam"
    """optimizer of the agent network and mixer (RMSprop: PyMARL's alpha=0.99, eps=1e-5)"""
    learning_rate: float = 1e-3
    """learning rate of the agent network and mixer (PyMARL/CleanMARL: 5e-4; 1e-3 learned LBF faster, docs)"""
    normalize_reward: bool = True
    """divide rewards by the running std of all real (unpadded) rewards so far (EPyMARL); Q_tot is rescaled with it"""
    clip_gradients: float = -1
    """clip each update's global gradient norm at this value (PyMARL: 10; docs: 3m under Results); <= 0: no clipping"""
    double_q: bool = True
    """online network picks the next action, target network evaluates it (van Hasselt et al., 2016)"""
    bound_targets: bool = False
    """clamp Q_tot^-(s', u') to the returns possible with the rewards seen so far, [min(r, 0), max(r, 0)] / (1 - gamma)"""
    n_epochs: int = 1
    """gradient steps per train step (one train step every train_freq episodes; 1: as many updates per episode as qmix.py)"""
    overlap: bool = True
    """step the envs during the updates after a finished episode, acting --n-epochs updates stale (--no-overlap: qmix.py's order)"""
    # Exploration
    start_e: float = 1.0
    """epsilon at the start, in [0, 1]"""
    end_e: float = 0.025
    """epsilon at the end of the schedule, in [0, 1]"""
    exploration_fraction: float = 0.05
    """fraction of total_timesteps over which epsilon decays linearly"""
    # Networks
    hidden_dim: int = 64
    """width of the agent network's hidden layers"""
    num_layers: int = 1
    """hidden layers of the agent network after its input layer (>= 0)"""
    hyper_dim: int = 64
    """width of the hypernetworks' hidden layer (when hypernet_layers=2)"""
    hypernet_layers: Literal[1, 2] = 1
    """layers of the weight hypernetworks: 1 as in the paper, 2 as in PyMARL/EPyMARL"""
    mixer_embed_dim: int = 32
    """width of the mixing network's hidden layer (paper: 32)"""
    # Target network
    target_network_update_freq: int = 200
    """update the target networks every target_network_update_freq training episodes (episodes; paper: 200)"""
    polyak: float = 1.0
    """target <- polyak * online + (1 - polyak) * target; 1.0 is the paper's hard copy"""
    # Evaluation
    eval_steps: int = 50
    """evaluate greedily every eval_steps training episodes (episodes, not env steps)"""
    num_eval_ep: int = 5
    """episodes per evaluation"""


# The flags that define a checkpoint: --load-model takes them from it (--time-limit may be overridden, the rest must match)
CHECKPOINT_FLAGS = "env_type env_name env_family agent_ids time_limit hidden_dim num_layers hyper_dim".split()
CHECKPOINT_FLAGS += ["hypernet_layers", "mixer_embed_dim", "last_action"]
CHECKPOINT_NETS = ("q_network", "mixer", "target_q_network", "target_mixer")


def check_args(args: Args) -> str | None:
    """One line describing the first bad value or combination, or None."""
    positive = "total_timesteps buffer_size batch_size train_freq log_every eval_steps num_eval_ep video_every".split()
    positive += "hidden_dim hyper_dim mixer_embed_dim torch_threads target_network_update_freq checkpoint_every num_envs n_epochs".split()  # fmt: skip
    rules = [(getattr(args, n) <= 0, f"--{n.replace('_', '-')} must be > 0, got {getattr(args, n)}") for n in positive]
    rules += [(not 0 <= getattr(args, n) <= 1, f"--{n.replace('_', '-')} must be in [0, 1], got {getattr(args, n)}")
              for n in ("start_e", "end_e", "gamma", "td_lambda")]  # fmt: skip
    rules += [
        (not 0 <= args.seed < 2**31, f"--seed must be in [0, 2**31), got {args.seed}"),
        (not args.exp_name or "/" in args.exp_name or os.sep in args.exp_name or args.exp_name in (".", ".."),
         f"--exp-name must be a plain name (no '/'), got {args.exp_name!r}"),
        (args.num_layers < 0, f"--num-layers must be >= 0, got {args.num_layers}"),
        (args.batch_size > args.buffer_size, f"--batch-size {args.batch_size} > --buffer-size {args.buffer_size}"),
        (not 0 < args.polyak <= 1, f"--polyak must be in (0, 1], got {args.polyak}"),
        (not 0 < args.exploration_fraction <= 1, f"--exploration-fraction {args.exploration_fraction} not in (0, 1]"),
        (not args.learning_rate >= 0, f"--learning-rate must be >= 0 (0 freezes the networks), got {args.learning_rate}"),
        (args.end_e > args.start_e, f"--end-e {args.end_e} > --start-e {args.start_e}: epsilon decays"),
        (args.eval_only and not args.load_model, "--eval-only needs --load-model PATH"),
        (args.bound_targets and args.gamma >= 1, "--bound-targets needs --gamma < 1 (it divides by 1 - gamma)"),
        (args.num_envs >= 10_000, f"--num-envs must be < 10000 (the eval env's seed is seed + 10000), got {args.num_envs}"),
    ]  # fmt: skip
    return next((message for bad, message in rules if bad), None)


class QNetwork(nn.Module):
    """Agent network shared by all agents: obs (+ one-hot id) -> one Q-value per action."""

    def __init__(self, obs_size, n_actions, hidden_dim, num_layers):
        super().__init__()
        layers = [nn.Linear(obs_size, hidden_dim), nn.ReLU()]
        for _ in range(num_layers):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, n_actions))

    def forward(self, obs):  # [..., N, obs_size] -> [..., N, A]
        return self.net(obs)


class QMixer(nn.Module):
    """Q_tot = w2 . elu(w1 q + b1) + b2, w1, w2 >= 0 made by hypernetworks from the state: abs() keeps dQ_tot/dQ_i >= 0,
    so each agent's argmax is the joint argmax (QMIX, Sec. 4). Biases are unconstrained; b2 is a 2-layer ReLU net (V(s))."""

    def __init__(self, n_agents, state_size, embed_dim, hyper_dim, hypernet_layers):
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, embed_dim

        def hypernet(out_size):
            if hypernet_layers == 1:
                return nn.Linear(state_size, out_size)
            return nn.Sequential(nn.Linear(state_size, hyper_dim), nn.ReLU(), nn.Linear(hyper_dim, out_size))

        self.hyper_w1 = hypernet(n_agents * embed_dim)
        self.hyper_b1 = nn.Linear(state_size, embed_dim)
        self.hyper_w2 = hypernet(embed_dim)
        self.hyper_b2 = nn.Sequential(nn.Linear(state_size, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))

    def forward(self, q_agents, state):  # q_agents [..., N], state [..., S] -> q_tot [...]
        w1 = self.hyper_w1(state).abs().view(*state.shape[:-1], self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(state)
        hidden = F.elu((q_agents.unsqueeze(-1) * w1).sum(-2) + b1)  # [..., E]; 3x faster than bmm on CPU
        w2 = self.hyper_w2(state).abs()
        return (hidden * w2).sum(-1) + self.hyper_b2(state).squeeze(-1)


@torch.no_grad()
def rescale_q_tot(mixers, old_scale, new_scale):
    """Q_tot *= old_scale / new_scale exactly, for every input (last layers of the w2 and b2 hypernetworks): values
    learned from rewards / old_scale stay right for rewards / new_scale (Pop-Art's output preservation)."""
    last_layers = [list(hypernet.modules())[-1] for m in mixers for hypernet in (m.hyper_w2, m.hyper_b2)]
    torch._foreach_mul_([p for layer in last_layers for p in layer.parameters()], old_scale / new_scale)


class RunningStats:
    """Std (Chan et al.'s parallel update, batch by batch) and range of every value seen so far; low/high include 0."""

    def __init__(self):
        self.count, self.mean, self.m2, self.low, self.high = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, x):
        self.low, self.high = min(self.low, float(np.min(x))), max(self.high, float(np.max(x)))
        n, mean = len(x), float(np.mean(x))
        delta, total = mean - self.mean, self.count + n
        self.m2 += float(np.sum((x - mean) ** 2)) + delta**2 * self.count * n / total
        self.mean, self.count = self.mean + delta * n / total, total

    @property
    def std(self):  # 0 while every value is the same up to float rounding (a constant -0.01 gave 9e-10), or none yet
        std = (self.m2 / max(self.count, 1)) ** 0.5
        return std if std > 1e-6 * max(-self.low, self.high) else 0.0


def bootstrap_range(reward_stats, scale, gamma):
    """--bound-targets: no return of the rewards seen so far leaves [min(r, 0), max(r, 0)] / (1 - gamma) (0: episodes
    can end), in the units the mixer learns (rewards / scale). -> (low, high) for Q_tot^-(s', u')"""
    bound = 1 / (scale or 1.0) / (1 - gamma)
    return reward_stats.low * bound, reward_stats.high * bound


def episode_fields(t, n, obs_size, state_size, n_actions):
    """What run_episode records of an episode of at most t steps: name -> (shape, dtype)."""
    shapes = dict(obs=(t, n, obs_size), next_obs=(t, n, obs_size), state=(t, state_size), next_state=(t, state_size))
    shapes.update(actions=(t, n), reward=(t,), terminated=(t,), next_avail_actions=(t, n, n_actions))
    dtypes = dict(actions=np.int64, next_avail_actions=bool)
    return {k: (shape, dtypes.get(k, np.float32)) for k, shape in shapes.items()}


class EpisodeBuffer:
    """Whole episodes in preallocated arrays [buffer_size, episode_limit, ...] with a fill mask. Padding is never
    written nor read; with lazy_zeros a slot commits the pages of the longest episode it has held (never given back)."""

    def __init__(self, buffer_size, episode_limit, n_agents, obs_size, state_size, n_actions, seed):
        sizes = (episode_limit, n_agents, obs_size, state_size, n_actions)
        self.fields = {k: harness.lazy_zeros((buffer_size, *s), d) for k, (s, d) in self.slot(*sizes).items()}
        self.buffer_size, self.pos, self.size = buffer_size, 0, 0
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def slot(t, n, obs_size, state_size, n_actions):
        """One episode's slot, padded to the limit t: name -> (shape, dtype)."""
        return {**episode_fields(t, n, obs_size, state_size, n_actions), "mask": ((t,), bool)}

    @classmethod
    def bytes_per_episode(cls, *sizes):
        """Memory of one slot (episode_limit, n_agents, obs_size, state_size, n_actions): the most it can commit."""
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in cls.slot(*sizes).values())

    def add(self, episode, length):
        """Copy the first `length` steps of `episode` (arrays [episode_limit, ...]) into the next slot."""
        for key, array in self.fields.items():
            if key != "mask":
                array[self.pos, :length] = episode[key][:length]  # the rest of the slot is padding: not written
        self.fields["mask"][self.pos] = np.arange(self.fields["mask"].shape[1]) < length
        self.pos = (self.pos + 1) % self.buffer_size
        self.size = min(self.size + 1, self.buffer_size)

    def episode(self, slot):
        """The real steps of the episode kept in `slot`, as add() takes them: name -> [T, ...]."""
        length = int(self.fields["mask"][slot].sum())
        return {k: v[slot, :length] for k, v in self.fields.items() if k != "mask"}

    def state_dict(self):
        """For --resume: every kept episode's real steps, oldest first (as add() takes them), and the sampling RNG."""
        first = self.pos if self.size == self.buffer_size else 0  # the oldest episode's slot
        episodes = [self.episode((first + i) % self.buffer_size) for i in range(self.size)]
        steps = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]} if episodes else {}
        lengths, rng = [len(e["reward"]) for e in episodes], self.rng.bit_generator.state
        return dict(steps=steps, lengths=lengths, first=first, rng=rng)

    def load_state_dict(self, saved):
        self.pos, ends = saved["first"], np.cumsum(saved["lengths"], dtype=int)
        for end, length in zip(ends, saved["lengths"], strict=True):
            self.add({k: np.asarray(v[end - length : end]) for k, v in saved["steps"].items()}, length)
        self.rng.bit_generator.state = saved["rng"]

    def sample(self, batch_size, device):
        """Uniform distinct whole episodes -> their real steps, flattened: dict of [M, ...] tensors, and "mask" [B, T]
        whose True places, row by row, are those M steps (TD(lambda) runs along each episode). Steps hold their own
        next_obs/next_state, so the networks need no time axis; padding never reaches the loss or costs compute."""
        idx = self.rng.choice(self.size, size=batch_size, replace=False)
        mask = self.fields["mask"][idx]
        episodes, steps = np.nonzero(mask)
        batch = {k: torch.from_numpy(v[idx[episodes], steps]).to(device) for k, v in self.fields.items() if k != "mask"}
        batch["mask"] = torch.from_numpy(mask[:, : steps.max() + 1]).to(device)  # [B, T]: where the steps were
        return batch


def numpy_weights(q_network):
    """The agent network's Linear layers as numpy (W^T, b) for acting: on CPU, views of the live parameters
    (the optimizer updates them in place); on other devices, copies refreshed every episode."""
    layers = [m for m in q_network.net if isinstance(m, nn.Linear)]
    return [(m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()) for m in layers]


def q_values_numpy(weights, obs):
    """QNetwork.forward in numpy: [N, obs_size] -> [N, A]. Acting is one tiny forward per env step, where
    torch's per-op dispatch costs ~5x numpy's (docs/qmix.md); batched training stays in torch."""
    for w, b in weights[:-1]:
        obs = np.maximum(obs @ w + b, 0.0)  # hidden layers, ReLU
    return obs @ weights[-1][0] + weights[-1][1]


def linear_schedule(start_e, end_e, duration, t):
    """Epsilon at step t: linear from start_e to end_e over `duration` steps, then constant."""
    return max(end_e, start_e + (end_e - start_e) * t / duration)


def select_actions(q_values, avail_actions, epsilon, rng):
    """Per-agent epsilon-greedy over available actions. q_values [N, A] float, avail_actions [N, A] bool."""
    greedy = np.where(avail_actions, q_values, -np.inf).argmax(-1)
    if epsilon <= 0:
        return greedy
    random_actions = np.where(avail_actions, rng.random(avail_actions.shape), -1.0).argmax(-1)
    return np.where(rng.random(len(greedy)) < epsilon, random_actions, greedy)


def compute_td_target(batch, target_next_q, target_mixer, gamma, online_next_q=None, value_range=None):
    """r + gamma * (1 - terminated) * Q_tot^-(s', u'), u' = per-agent argmax over available next actions.
    target_next_q / online_next_q [..., N, A]: the target / online network on next_obs; with online_next_q (double Q)
    the online network picks u', the target network evaluates it. Truncated steps have terminated = 0, so they
    bootstrap (pymarl#11 / Pardo et al., 2018); an env's fixed horizon (MPE, SMAC) is a termination, with the time in
    obs and state (docs/env.md). value_range (low, high) clamps Q_tot^-(s', u'). -> td_target, clamped"""
    next_avail = batch["next_avail_actions"]
    chooser = target_next_q if online_next_q is None else online_next_q
    next_actions = chooser.masked_fill(~next_avail, -torch.inf).argmax(-1, keepdim=True)
    next_q = target_next_q.gather(-1, next_actions).squeeze(-1)  # [..., N]
    target_q_tot = target_mixer(next_q, batch["next_state"])
    clamped = torch.zeros_like(target_q_tot, dtype=torch.bool)
    if value_range is not None:
        clamped = (target_q_tot < value_range[0]) | (target_q_tot > value_range[1])
        target_q_tot = target_q_tot.clamp(*value_range)
    return batch["reward"] + gamma * (1.0 - batch["terminated"]) * target_q_tot, clamped


@torch.no_grad()
def online_next_q_values(q_network, q_values, batch):
    """q_network(next_obs), from q_values = q_network(obs) wherever a step's next_obs is the next row's obs (docs)."""
    fresh = (batch["next_obs"] != batch["obs"].roll(-1, 0)).flatten(1).any(1)  # equal inputs give equal outputs
    next_q = q_values.roll(-1, 0)
    next_q[fresh] = q_network(batch["next_obs"][fresh])
    return next_q


def lambda_returns(td_target, reward, mask, gamma, td_lambda):
    """TD(lambda) targets from the one-step targets y_t = r_t + gamma (1 - terminated_t) Q_tot^-(t + 1), backwards over
    each episode: G_t = y_t + lambda (gamma G_{t+1} - (y_t - r_t)) while step t + 1 is real, G_t = y_t at the last step
    (a truncated end bootstraps, a terminated one does not). Only the last step can be terminated, so this is PyMARL2's
    r_t + gamma (1 - terminated_t) ((1 - lambda) Q_tot^-(t + 1) + lambda G_{t+1}). Unrolled, G_t is the sum over the
    episode's steps k >= t of (lambda gamma)^(k - t) a_k, a_k = y_k - lambda (y_k - r_k) [k + 1 real]: one matrix
    product, not a Python loop over T. [B, T] -> [B, T]"""
    next_real = F.pad(mask[:, 1:], (0, 1))  # step k + 1 is a real step of the same episode
    a = torch.where(mask, td_target - td_lambda * next_real * (td_target - reward), 0.0)  # padding: 0, never inf
    k = torch.arange(mask.shape[1], device=mask.device)
    powers = (td_lambda * gamma) ** (k[None] - k[:, None]).clamp(min=0) * (k[None] >= k[:, None])  # [T, T]: t, k
    powers[powers < torch.finfo(powers.dtype).tiny] = 0.0  # float32 subnormals (k - t ~168-198) slow the product ~10x
    return a @ powers.T


def qmix_loss(batch, q_network, mixer, target_q_network, target_mixer, args, value_range=None):
    """The update's loss on a sampled batch (sample()'s real steps of B episodes, [M, ...]): Q_tot(s, u) against its
    TD(lambda) targets from the target networks. -> loss, and for the logs q_taken [M, N], td_target [M], clamped [M]."""
    q_values = q_network(batch["obs"])  # [M, N, A]
    q_taken = q_values.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # [M, N]
    q_tot = mixer(q_taken, batch["state"])  # [M]
    with torch.no_grad():
        target_next_q = target_q_network(batch["next_obs"])
        online_next_q = online_next_q_values(q_network, q_values, batch) if args.double_q else None
        td_target, clamped = compute_td_target(batch, target_next_q, target_mixer, args.gamma, online_next_q, value_range)  # fmt: skip
        if args.td_lambda > 0:  # along each episode: the flat steps back in their places [B, T], and out again
            mask = batch["mask"]
            td_target, reward = (x.new_zeros(mask.shape).masked_scatter(mask, x) for x in (td_target, batch["reward"]))
            td_target = lambda_returns(td_target, reward, mask, args.gamma, args.td_lambda)[mask]
    return F.mse_loss(q_tot, td_target), q_taken, td_target, clamped  # the mean over the real steps of the batch


@torch.no_grad()
def soft_update(target_params, online_params, polyak):
    """target <- target + polyak * (online - target), all tensors in one fused op."""
    torch._foreach_lerp_(target_params, online_params, polyak)


class VectorRollout:
    """Steps every env of a VectorEnv at once, acting for all with one batched forward, and hands the finished episodes
    out one at a time, in the order they ended (env order within a step). An env starts its next episode at once; each
    episode keeps the epsilon of its first step, as in qmix.py. With overlap, the step after a finished episode is sent
    before the caller's updates: the workers step while the learner learns, acting --n-epochs updates stale."""

    def __init__(self, envs, sizes, rng, overlap):
        self.envs, self.rng, self.overlap, n, fields = envs, rng, overlap, envs.num_envs, episode_fields(*sizes)
        self.episodes = [{k: np.zeros(shape, dtype) for k, (shape, dtype) in fields.items()} for _ in range(n)]
        self.t, self.returns, self.epsilons = np.zeros(n, dtype=int), np.zeros(n), np.full(n, np.nan)
        self.finished, self.acting, self.actions = [], None, None  # acting: obs, state, avail [E, ...]

    def send(self, weights, epsilon):
        """Act on every env's current step and send the actions to the workers."""
        self.acting = self.acting or self.envs.reset()  # obs, state, avail_actions [E, ...]; reset at the first step
        obs, _, avail_actions = self.acting
        self.epsilons[np.isnan(self.epsilons)] = epsilon  # envs whose episode takes its first step now
        q_values = q_values_numpy(weights, obs)  # [E, N, A]: one forward for all envs
        per_env = zip(q_values, avail_actions, self.epsilons, strict=True)
        self.actions = np.stack([select_actions(q, avail, e, self.rng) for q, avail, e in per_env])
        self.envs.step_async(self.actions)

    def collect(self):
        """Wait for the step sent; store it; episodes that ended go to self.finished, with their epsilon."""
        (obs, state, _), actions, self.actions = self.acting, self.actions, None
        (next_obs, next_state, next_avail, reward, terminated, truncated, infos), self.acting = self.envs.step_wait()
        for i, ep in enumerate(self.episodes):
            t = self.t[i]
            ep["obs"][t], ep["state"][t], ep["actions"][t] = obs[i], state[i], actions[i]
            ep["next_obs"][t], ep["next_state"][t], ep["reward"][t] = next_obs[i], next_state[i], reward[i]
            ep["terminated"][t], ep["next_avail_actions"][t] = terminated[i], next_avail[i]
            self.t[i], self.returns[i] = t + 1, self.returns[i] + reward[i]
            if terminated[i] or truncated[i]:  # env i has reset already: self.acting holds its next episode's start
                steps = {k: v[: t + 1].copy() for k, v in ep.items()}
                self.finished.append((steps, self.returns[i], infos[i], self.epsilons[i]))
                self.t[i], self.returns[i], self.epsilons[i] = 0, 0.0, np.nan

    def next_episode(self, q_network, epsilon, episode):
        """Step until an episode has ended; copy it into `episode` (buffer arrays [T, ...]). -> return, length, info as
        run_episode, and the episode's epsilon. epsilon: for the episodes whose first step is taken during this call."""
        weights = numpy_weights(q_network)
        try:
            while not self.finished:
                if self.actions is None:
                    self.send(weights, epsilon)
                self.collect()
            if self.overlap and len(self.finished) == 1:  # the next call must step: start that step now
                self.send(weights, epsilon)
        except WorkerError as e:  # the vector env has stopped its workers
            sys.exit(f"{PROG}: error: {e}")
        steps, ep_return, info, epsilon = self.finished.pop(0)
        episode.update(steps)  # its arrays, of its length
        return float(ep_return), len(steps["reward"]), info, float(epsilon)

    def state_dict(self):
        """For --resume: each env's episode under way (steps, start's random state), those ended; a step sent is taken in."""
        if self.actions is not None:
            self.collect()
        return {k: v for k, v in vars(self).items() if k not in ("envs", "rng", "acting")} | {"starts": self.envs.start_states()}  # fmt: skip

    def load_state_dict(self, saved):
        """Each env replays its episode under way from its saved random state: every env is where it was (docs)."""
        vars(self).update(harness.tree_map(harness.as_numpy, {k: v for k, v in saved.items() if k != "starts"}))
        self.acting = self.envs.restore(saved["starts"], [ep["actions"][:t] for ep, t in zip(self.episodes, self.t, strict=True)])  # fmt: skip


def run_episode(env, q_network, epsilon, rng, episode=None):
    """Play one episode; fill `episode` (buffer arrays [T, ...]) when given. -> return, length, info."""
    weights = numpy_weights(q_network)
    obs, state, avail_actions, info = env.reset()
    ep_return, t, terminated, truncated = 0.0, 0, False, False
    while not (terminated or truncated):
        q_values = q_values_numpy(weights, obs)
        actions = select_actions(q_values, avail_actions, epsilon, rng)
        next_obs, next_state, avail_actions, reward, terminated, truncated, info = env.step(actions)
        if episode is not None:
            episode["obs"][t], episode["state"][t], episode["actions"][t] = obs, state, actions
            episode["next_obs"][t], episode["next_state"][t], episode["reward"][t] = next_obs, next_state, reward
            episode["terminated"][t], episode["next_avail_actions"][t] = terminated, avail_actions
        obs, state, ep_return, t = next_obs, next_state, ep_return + reward, t + 1
    return ep_return, t, info


def evaluate(env, q_network, num_episodes):
    """Greedy episodes -> (returns, lengths, battle_won or None)."""
    returns, lengths, infos = zip(*[run_episode(env, q_network, 0.0, None) for _ in range(num_episodes)], strict=True)
    return returns, lengths, ([info["battle_won"] for info in infos] if "battle_won" in infos[0] else None)


def start_evaluation(eval_envs, q_network, num_episodes):
    """evaluate() in the evaluation workers, while training goes on, with a CPU copy of the network as it is now: worker
    i plays episodes i, i + E, ... on its env (seed + 10000 + i). log_evaluation() waits for them."""
    eval_envs.play_async(run_episode, (copy.deepcopy(q_network).cpu(), 0.0, None), num_episodes)


def log_evaluation(writer, step, eval_envs):
    """Wait for the evaluation started at env step `step`; log it there, as qmix.py logs evaluate(). -> its mean return."""
    try:
        returns, lengths, infos = zip(*eval_envs.play_wait(), strict=True)
    except WorkerError as e:  # the vector env has stopped its workers
        sys.exit(f"{PROG}: error: {e}")
    won = [info["battle_won"] for info in infos] if "battle_won" in infos[0] else None
    # evaluations.jsonl (each episode's return), the eval/* scalars, and the video when one was recorded
    return harness.record_evaluation(writer.log_dir, step, returns, lengths, won, writer, eval_envs)


if __name__ == "__main__":
    # SETUP
    args, checkpoint, resume = tyro.cli(Args), None, None
    harness.catch_stop_signals(defer=False)
    try:  # a user mistake ends the run with one line
        if args.resume:  # the saved run's flags; only how it is watched and how long it runs may change
            resume = harness.load_state(args.resume, PROG)
            args = harness.resume_args(tyro.cli, Args, resume, args.resume)
        elif args.load_model:  # the checkpoint's env and network flags become the defaults; others must match them
            checkpoint = harness.load_checkpoint(args.load_model, CHECKPOINT_FLAGS, CHECKPOINT_NETS)
            args = harness.checkpoint_args(tyro.cli, Args, checkpoint, CHECKPOINT_FLAGS)
        if error := check_args(args):
            raise ValueError(error)
        device = harness.torch_device(args.device, args.torch_threads)
        rng, buffer_rng = harness.seed_everything(args.seed, 2)  # + streams of their own: exploration, replay sampling
        args.env_type = args.env_type or resolve_env_type(args.env_name)
        env_kwargs = {k: getattr(args, k) for k in ("env_family", "agent_ids", "last_action", "time_limit")}
        if args.eval_only:  # plays eval_env alone: no workers to start
            env = eval_env = make_env(args.env_type, args.env_name, seed=args.seed + 10_000, **env_kwargs)
        else:  # training evaluates in workers of its own, env i seeded with seed + 10000 + i
            env = VectorEnv(args.env_type, args.env_name, args.num_envs, seed=args.seed, **env_kwargs)
            eval_env = VectorEnv(args.env_type, args.env_name, min(args.num_envs, args.num_eval_ep), args.seed + 10_000, **env_kwargs)  # fmt: skip
        harness.prepare_video(eval_env, args.capture_video)  # where it cannot draw: one line now, not hours in
        q_network = QNetwork(env.obs_size, env.n_actions, args.hidden_dim, args.num_layers).to(device)
        mixer = QMixer(env.n_agents, env.state_size, args.mixer_embed_dim, args.hyper_dim, args.hypernet_layers).to(device)  # fmt: skip
        target_q_network, target_mixer = copy.deepcopy(q_network), copy.deepcopy(mixer)
        nets = dict(zip(CHECKPOINT_NETS, (q_network, mixer, target_q_network, target_mixer), strict=True))
        if checkpoint:
            harness.load_networks(nets, checkpoint, f"--load-model {args.load_model!r}")
            rescale_q_tot((mixer, target_mixer), checkpoint.get("reward_scale", 1.0), 1.0)  # Q_tot in reward units
    except ValueError as e:  # EnvError is one
        sys.exit(f"{PROG}: error: {e}")
    if args.eval_only:
        sys.exit(harness.print_evaluation(args.load_model, eval_env, *evaluate(eval_env, q_network, args.num_eval_ep)))

    # The padded buffer can grow to buffer_size episodes at the limit: refuse it before it runs out hours in.
    sizes = (env.episode_limit, env.n_agents, env.obs_size, env.state_size, env.n_actions)
    if error := harness.buffer_too_big(args.buffer_size, EpisodeBuffer.bytes_per_episode(*sizes), env.episode_limit):
        sys.exit(f"{PROG}: error: {error}")

    run_dir, writer, wandb_run = harness.start_run(args, resume)  # runs/{env_name}__{exp_name}__{seed}__{time}
    model_path = f"{run_dir}/{args.exp_name}.cleanmarl_model"
    params = list(q_network.parameters()) + list(mixer.parameters())
    target_params = list(target_q_network.parameters()) + list(target_mixer.parameters())
    if args.optimizer == "Adam":
        optimizer = torch.optim.Adam(params, lr=args.learning_rate, fused=True)  # one kernel for all params
    else:
        optimizer = torch.optim.RMSprop(params, lr=args.learning_rate, alpha=0.99, eps=1e-5)
    rb = EpisodeBuffer(args.buffer_size, *sizes, buffer_rng)
    episode = {k: np.zeros(shape, dtype) for k, (shape, dtype) in episode_fields(*sizes).items()}  # one, reused
    reward_stats, exploration_steps = RunningStats(), args.exploration_fraction * args.total_timesteps
    objects = nets | dict(optimizer=optimizer, rb=rb, reward_stats=reward_stats, rng=rng, env=env, eval_env=eval_env)
    objects["env"] = rollout = VectorRollout(env, sizes, rng, args.overlap)  # the envs' state: its episodes under way
    saver = harness.StateSaver(run_dir, PROG, args, objects, writer, wandb_run)  # from here a stop signal saves first
    loop = saver.restore(resume) if resume else (0, 0, 0, 1.0 if args.load_model else None, [], [], [], [], float("nan"), 0.0)  # fmt: skip
    global_step, num_episodes, num_updates, scale, ep_returns, ep_lengths, ep_won, train_logs, eval_return, elapsed = loop  # fmt: skip
    start_time, pending_eval = time.time() - elapsed, None
    progress = harness.Progress(args.total_timesteps, args.progress_bar, initial=global_step)
    while global_step < args.total_timesteps:
        # ROLLOUT: epsilon is held for the episode, at its value at the episode's first step.
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
        ep_return, ep_length, info, epsilon = rollout.next_episode(q_network, epsilon, episode)  # the episode's own
        rb.add(episode, ep_length)
        reward_stats.update(episode["reward"][:ep_length])  # real steps only
        global_step, num_episodes = global_step + ep_length, num_episodes + 1
        progress.update(ep_length)
        ep_returns.append(ep_return)
        ep_lengths.append(ep_length)
        if "battle_won" in info:
            ep_won.append(info["battle_won"])

        # TRAIN
        for _ in range(args.n_epochs if rb.size >= args.batch_size and num_episodes % args.train_freq == 0 else 0):
            batch = rb.sample(args.batch_size, device)  # the real steps of B episodes: [M, ...]
            # A scale only (a shift would change the optimal policy when episodes can end early). Q_tot moves with it,
            # as in Pop-Art (van Hasselt et al., 2016); else bootstrap-only values outgrow reward-grounded ones (docs).
            # While every reward is 0 the scale stays None (rewards / 1): Q_tot's true values are 0 in any unit then.
            if args.normalize_reward and (reward_stats.std > 0 or reward_stats.mean != 0):
                if scale is not None:  # not from None: that would only blow Q_tot's error around 0 up by 1 / std
                    rescale_q_tot((mixer, target_mixer), scale, reward_stats.std or 1.0)
                scale = reward_stats.std or 1.0  # std 0: one constant reward so far, learned / 1
            batch["reward"] = batch["reward"] / (scale or 1.0)
            # --bound-targets: no return leaves [low, high] / (1 - gamma), so a bootstrap outside it is pure
            # extrapolation (MPE's time-limit cut states run away first: docs, Results). Truncation still bootstraps.
            value_range = bootstrap_range(reward_stats, scale, args.gamma) if args.bound_targets else None
            loss, q_taken, td_target, clamped = qmix_loss(batch, *nets.values(), args, value_range)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Returns the norm before clipping; an infinite max_norm only measures it.
            grads = nn.utils.clip_grad_norm_(params, args.clip_gradients if args.clip_gradients > 0 else torch.inf)
            optimizer.step()
            num_updates += 1
            logs = [loss, grads, q_taken.mean(), td_target.mean(), clamped.float().mean()]
            train_logs.append(torch.stack(logs).detach())

        # TARGET
        if num_episodes % args.target_network_update_freq == 0:
            soft_update(target_params, params, args.polyak)

        # LOG
        if num_episodes % args.log_every == 0:
            sps = int(global_step / (time.time() - start_time))
            writer.add_scalar("rollout/ep_reward", np.mean(ep_returns), global_step)
            writer.add_scalar("rollout/ep_length", np.mean(ep_lengths), global_step)
            writer.add_scalar("rollout/epsilon", epsilon, global_step)
            writer.add_scalar("rollout/num_episodes", num_episodes, global_step)
            if ep_won:
                writer.add_scalar("rollout/battle_won", np.mean(ep_won), global_step)
            if train_logs:
                names = ["train/loss", "train/grads", "train/q_taken_mean", "train/target_mean", "train/target_clamped"]
                for name, value in zip(names, torch.stack(train_logs).mean(0).tolist(), strict=True):
                    writer.add_scalar(name, value, global_step)
            writer.add_scalar("train/num_updates", num_updates, global_step)
            writer.add_scalar("train/reward_scale", scale or 1.0, global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            progress.show(global_step, np.mean(ep_returns), eval_return, sps)
            ep_returns, ep_lengths, ep_won, train_logs = [], [], [], []

        # EVAL: played by the evaluation workers while training goes on, logged at the step it started once it ended
        due = num_episodes % args.eval_steps == 0 or global_step >= args.total_timesteps
        if pending_eval is not None and (due or eval_env.play_ready()):  # one evaluation at a time
            eval_return, pending_eval = log_evaluation(writer, pending_eval, eval_env), None
        if due:
            eval_env.recording = harness.video_due(args, run_dir)  # --capture-video: its first episode drawn
            start_evaluation(eval_env, q_network, args.num_eval_ep)
            pending_eval = global_step  # the step it started at, to log it there
            if args.save_model:  # at every evaluation, so that a run stopped early keeps its latest policy
                harness.save_model(model_path, nets, args, scale or 1.0, global_step)  # Q_tot * scale: reward units

        # SAVE: the training state (--resume) every --checkpoint-every minutes, at the end, and after a stop signal
        if saver.due(end=global_step >= args.total_timesteps):
            if pending_eval is not None:  # the state holds no evaluation under way: it is logged first, at its step
                eval_return, pending_eval = log_evaluation(writer, pending_eval, eval_env), None
            loop = (global_step, num_episodes, num_updates, scale, ep_returns, ep_lengths, ep_won, train_logs)
            saver.save((*loop, eval_return, time.time() - start_time))
        if saver.stopping:
            break

    harness.end_run((env, eval_env), progress, saver, args.save_model and model_path)
