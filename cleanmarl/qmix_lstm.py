# Docs: https://github.com/cleanmarl/cleanmarl/blob/main/docs/qmix_lstm.md
# qmix.py with the paper's recurrent agents (GRU): whole episodes unrolled from t = 0; opt. TBPTT.
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
from cleanmarl.utils import (
    Run,
    TrainingState,
    buffer_arrays,
    load_networks,
    print_evaluation,
    startup_args,
    torch_device,
)


@dataclass
class Args:
    """QMIX (Rashid et al., 2018) with the paper's recurrent agents: a GRU keeps what each saw.

    Example: python cleanmarl/qmix_lstm.py --env-name Foraging-2s-8x8-2p-2f-coop-v3 --seed 1
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
    tbptt: int = 0
    """truncated backpropagation through time: at most tbptt steps back; 0: whole episodes"""
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
    num_layers: int = 0
    """ReLU layers of the agent network between its GRU and its output layer (PyMARL: 0)"""
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
    """Recurrent network for all agents (DRQN, as the paper and PyMARL's RNNAgent): obs (+ agent
    id, last action) -> fc -> ReLU -> GRU -> (fc -> ReLU) x num_layers -> a Q-value per action.
    A GRU, not an LSTM, whatever the file's name: the paper and PyMARL use a GRU (docs)."""

    def __init__(self, obs_size, n_actions, hidden_dim, num_layers):
        super().__init__()
        self.fc = nn.Linear(obs_size, hidden_dim)
        self.rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)  # unrolled in C++, not Python
        layers = []
        for _ in range(num_layers):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden_dim, n_actions))

    def forward(self, inputs, hidden=None):
        """[B, T, N, D], hidden [B, N, H] (None: zeros) -> [B, T, N, A], hidden [B, N, H]"""
        b, t, n, _ = inputs.shape
        self.rnn.flatten_parameters()  # cuDNN wants the weights in one chunk; a deepcopy breaks it
        x = F.relu(self.fc(inputs)).transpose(1, 2).reshape(b * n, t, -1)  # a sequence per agent
        out, hidden = self.rnn(x, None if hidden is None else hidden.reshape(1, b * n, -1))
        return self.net(out.view(b, n, t, -1).transpose(1, 2)), hidden.view(b, n, -1)


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
        """Whole episodes cut to the longest: [B, T, ...], and "mask" [B, T] of their real steps.
        The unroll needs each from its first step; padding after it is masked out of the loss."""
        idx = self.rng.choice(self.size, size=batch_size, replace=False)
        t = int(self.mask[idx].sum(1).max())
        batch = {k: torch.from_numpy(v[idx, :t]) for k, v in self.fields.items()}
        batch["mask"] = torch.from_numpy(self.mask[idx, :t])
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
def sequence_inputs(batch):
    """The agent network's inputs at o_0 .. o_T of each episode: [B, T + 1, N, D]. next_obs[t] is
    o_{t+1}, so obs[:, :1] then next_obs is the whole sequence, a truncated episode's final
    observation included (with --last-action, its last action is actions[t] in next_obs[t])."""
    return torch.cat([batch["obs"][:, :1], batch["next_obs"]], 1)


def unroll(q_network, inputs, tbptt=0):
    """Q-values of every step, the hidden state from zeros (each episode starts at t = 0). tbptt > 0
    unrolls in chunks of tbptt steps, the gradient cut between them (truncated BPTT): the values
    are the whole unroll's. [B, T + 1, N, D] -> [B, T + 1, N, A]"""
    q_values, hidden = [], None
    for chunk in inputs.split(tbptt or inputs.shape[1], dim=1):
        q_chunk, hidden = q_network(chunk, hidden)
        q_values.append(q_chunk)
        hidden = hidden.detach()  # carried across the border, its gradient not
    return torch.cat(q_values, 1)


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
    """Mean squared TD(lambda) error of Q_tot over the real steps of B padded episodes [B, T, ...]
    -> loss, and at the real steps (mask's True places, row by row) q_taken [M, N] and
    td_target [M]."""
    mask = batch["mask"]  # [B, T]
    # Both networks unrolled from zeros over o_0 .. o_T: step t's target reads the target network
    # at t + 1 of its own unroll (a target GRU restarted at o_1 would never see o_0).
    inputs = sequence_inputs(batch)  # [B, T + 1, N, D]
    q_values = unroll(q_network, inputs, args.tbptt)  # [B, T + 1, N, A]
    q_taken = q_values[:, :-1].gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)  # [B, T, N]
    q_tot = mixer(q_taken, batch["state"])  # [B, T]
    with torch.no_grad():
        target_next_q = target_q_network(inputs)[0][:, 1:]  # [B, T, N, A]
        online_next_q = q_values[:, 1:].detach() if args.double_q else None  # the same unroll
        td_target = compute_td_target(batch, target_next_q, target_mixer, args.gamma, online_next_q)
        if args.td_lambda > 0:
            td_target = lambda_returns(td_target, batch["reward"], mask, args.gamma, args.td_lambda)
    return F.mse_loss(q_tot[mask], td_target[mask]), q_taken[mask], td_target[mask]


@torch.inference_mode()  # acting records no graph
def run_episode(env, q_network, args, epsilon, rng):
    """Play one episode with q_network itself, its hidden state carried from step to step. -> its
    steps (name -> [T, ...]), return, info"""
    device, hidden = next(q_network.parameters()).device, None  # None: zeros, as in the unroll
    obs, state, avail_actions, info = env.reset()
    obs, ep_return, steps = agent_inputs(obs, None, env.n_actions, args), 0.0, []
    terminated = truncated = False
    while not (terminated or truncated):
        q_values, hidden = q_network(torch.from_numpy(obs).to(device)[None, None], hidden)
        actions = select_actions(q_values[0, 0].cpu().numpy(), avail_actions, epsilon, rng)
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
        env = make_env(args.env_type, args.env_name, seed=args.seed, **kw)
        eval_env = make_env(args.env_type, args.env_name, seed=args.seed + 10_000, **kw)
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
        state |= dict(loop=loop, env=env, eval_env=eval_env)
        saver = TrainingState(run, args, state, resume, globals())
    except ValueError as e:  # EnvError is one
        sys.exit(f"{os.path.basename(__file__)}: error: {e}")
    exploration_steps = args.exploration_fraction * args.total_timesteps
    while loop.global_step < args.total_timesteps:
        # ROLLOUT: one epsilon for the whole episode
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, loop.global_step)
        episode, ep_return, info = run_episode(env, q_network, args, epsilon, rng)
        rb.add(episode)
        reward_stats.update(episode["reward"])
        loop.global_step += len(episode["reward"])
        loop.num_episodes += 1
        run.add({"rollout/ep_reward": ep_return, "rollout/ep_length": len(episode["reward"])})
        run.add({"rollout/battle_won": info.get("battle_won")})  # None: not logged

        # TRAIN
        if rb.size >= args.batch_size and loop.num_episodes % args.train_freq == 0:
            batch = rb.sample(args.batch_size, device)  # B whole episodes, padded: [B, T, ...]
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
            run.log(scalars, loop.global_step)  # + the means of what run.add() took, charts/SPS

        # EVAL
        if loop.num_episodes % args.eval_steps == 0 or loop.global_step >= args.total_timesteps:
            eval_env.recording = run.video_due()  # --capture-video
            episodes = evaluate(eval_env, q_network, args)
            # evaluations.jsonl, eval/* scalars and the video, if recorded
            run.record_evaluation(loop.global_step, episodes, eval_env)
            if args.save_model:
                run.save_model(nets, loop.reward_scale or 1.0, loop.global_step)

        # SAVE: the training state, every --checkpoint-every minutes
        if saver.due(end=loop.global_step >= args.total_timesteps):
            saver.save(loop.global_step)
        if saver.stopping:
            break

    run.close((env, eval_env))
    sys.exit(saver.stopped(loop.global_step))  # 128 + signal when stopped early, else 0
