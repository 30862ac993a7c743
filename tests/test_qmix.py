"""Pins the math of cleanmarl/qmix.py: mixer monotonicity and IGM, the TD target, the buffer, acting."""

import itertools
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanmarl import qmix
from cleanmarl.utils import checkpoints, flags, layout, system
from tests.test_smoke import ROOT

GAMMA = 0.9
RAW = qmix.Args(agent_ids=False, last_action=False)  # the agents see the env's obs only


def sum_mixer(q_agents, state):
    """A mixer whose output is easy to compute by hand: Q_tot = sum_i Q_i + state[..., 0]."""
    return q_agents.sum(-1) + state[..., 0]


def random_mixer(seed, n_agents, state_size, scale):
    """A QMixer with random weights far from its init (scale), so monotonicity is not an init artefact."""
    torch.manual_seed(seed)
    mixer = qmix.QMixer(n_agents, state_size, embed_dim=8)
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0.0, scale)
    return mixer


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_agents=st.integers(1, 6),
    scale=st.floats(0.01, 10.0),
    q_scale=st.floats(0.01, 100.0),
)
def test_mixer_is_monotonic(seed, n_agents, scale, q_scale):
    state_size = 5
    mixer = random_mixer(seed, n_agents, state_size, scale)
    gen = torch.Generator().manual_seed(seed)
    q_agents = (torch.randn(64, n_agents, generator=gen) * q_scale).requires_grad_()
    state = torch.randn(64, state_size, generator=gen) * 5
    q_tot = mixer(q_agents, state)
    assert q_tot.shape == (64,)
    (grad,) = torch.autograd.grad(q_tot.sum(), q_agents)
    assert torch.isfinite(grad).all()
    assert (grad >= 0).all(), "dQ_tot/dQ_i < 0: the mixer is not monotonic"


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    old_scale=st.floats(1e-3, 1e3),
    new_scale=st.floats(1e-3, 1e3),
)
def test_mixer_rescale_keeps_values_in_reward_units(seed, old_scale, new_scale):
    """Pop-Art's output preservation: when the reward scale moves, scale * Q_tot (a value in reward units) is
    unchanged for every state and agent Q, for the online and target mixers alike. In float64: Q_tot can be a sum of
    terms far larger than itself (a float32 CI case: 0.108 from terms of 233 in all), beyond any float32 tolerance."""
    n_agents, state_size = 3, 5
    mixers = [random_mixer(seed + i, n_agents, state_size, scale=1.0).double() for i in range(2)]
    gen = torch.Generator().manual_seed(seed)
    q_agents = torch.randn(128, n_agents, generator=gen, dtype=torch.float64) * 10
    state = torch.randn(128, state_size, generator=gen, dtype=torch.float64) * 5
    with torch.no_grad():
        before = [old_scale * m(q_agents, state) for m in mixers]
        for mixer in mixers:
            mixer.rescale(old_scale / new_scale)
        after = [new_scale * m(q_agents, state) for m in mixers]
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * old_scale)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_actions=st.integers(2, 4),
)
def test_per_agent_argmax_is_joint_argmax(seed, n_actions):
    """IGM: the greedy joint action from each agent's own argmax maximises Q_tot (brute force)."""
    n_agents, state_size = 3, 4
    mixer = random_mixer(seed, n_agents, state_size, scale=1.0)
    gen = torch.Generator().manual_seed(seed)
    q_values = torch.randn(n_agents, n_actions, generator=gen) * 3
    state = torch.randn(state_size, generator=gen)
    joint = torch.tensor(list(itertools.product(range(n_actions), repeat=n_agents)))  # [A^N, N]
    q_joint = q_values[torch.arange(n_agents), joint]  # [A^N, N]
    with torch.no_grad():
        q_tot_all = mixer(q_joint, state.expand(len(joint), -1))
    # the greedy joint action's Q_tot from the same batched call: one rounding for all
    q_tot_greedy = q_tot_all[(joint == q_values.argmax(-1)).all(1)].item()
    best = q_tot_all.max()
    assert q_tot_greedy >= best - 1e-5 * max(1.0, abs(best.item()))


def test_mixer_is_not_just_a_sum():
    """The state-conditioned mixer can represent what VDN cannot: Q_tot depends on the state."""
    mixer = random_mixer(0, 2, 3, 1.0)
    q = torch.ones(2, 2)
    s = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    out = mixer(q, s)
    assert not torch.allclose(out[0], out[1])


def make_batch():
    """B=1, T=4, N=2, A=3. Step 0: plain; 1: truncated (bootstraps); 2: terminated; 3: padding."""
    t, n, a = 4, 2, 3
    batch = {
        "reward": torch.tensor([[1.0, 2.0, 3.0, 0.0]]),
        "terminated": torch.tensor([[0.0, 0.0, 1.0, 0.0]]),
        "next_state": torch.tensor([[[0.5], [-1.0], [2.0], [0.0]]]),
        "next_avail_actions": torch.ones(1, t, n, a, dtype=torch.bool),
        "mask": torch.tensor([[True, True, True, False]]),
    }
    # Step 0: the best next action of agent 0 (index 2) is unavailable.
    batch["next_avail_actions"][0, 0, 0, 2] = False
    target_next_q = torch.zeros(1, t, n, a)
    target_next_q[0, 0] = torch.tensor([[1.0, 3.0, 10.0], [0.0, -2.0, 4.0]])
    target_next_q[0, 1] = torch.tensor([[5.0, 1.0, 0.0], [2.0, 6.0, 1.0]])
    target_next_q[0, 2] = torch.tensor([[9.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    online_next_q = torch.zeros(1, t, n, a)
    online_next_q[0, 0] = torch.tensor(
        [[4.0, 0.0, 99.0], [3.0, 0.0, 0.0]]
    )  # picks 0 (2 unavailable), 0
    online_next_q[0, 1] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # picks 2, 2
    return batch, target_next_q, online_next_q


def test_td_target_by_hand():
    batch, target_next_q, _ = make_batch()
    td_target = qmix.compute_td_target(batch, target_next_q, sum_mixer, GAMMA)
    expected = torch.tensor(
        [
            1.0
            + GAMMA * (3.0 + 4.0 + 0.5),  # max over available: agent 0 takes 3 (10 is unavailable)
            2.0 + GAMMA * (5.0 + 6.0 - 1.0),  # truncated: bootstraps like any non-terminal step
            3.0,  # terminated: no bootstrap, whatever the next values
            0.0,  # padding: finite (masked out of the loss)
        ]
    )
    torch.testing.assert_close(td_target[0], expected)


def test_td_target_double_q_by_hand():
    batch, target_next_q, online_next_q = make_batch()
    td_target = qmix.compute_td_target(batch, target_next_q, sum_mixer, GAMMA, online_next_q)
    expected = torch.tensor(
        [
            1.0
            + GAMMA * (1.0 + 0.0 + 0.5),  # online picks (0, 0) among available; target evaluates
            2.0 + GAMMA * (0.0 + 1.0 - 1.0),  # online picks (2, 2)
            3.0,
            0.0,
        ]
    )
    torch.testing.assert_close(td_target[0], expected)


def test_td_target_never_bootstraps_an_unavailable_action():
    batch, target_next_q, online_next_q = make_batch()
    batch["next_avail_actions"][:] = False
    batch["next_avail_actions"][..., 0] = True  # only action 0 everywhere
    for online in (None, online_next_q):
        td_target = qmix.compute_td_target(batch, target_next_q, sum_mixer, GAMMA, online)
        nonterminal = 1 - batch["terminated"]
        q0 = target_next_q[..., 0].sum(-1) + batch["next_state"][..., 0]
        torch.testing.assert_close(td_target, batch["reward"] + GAMMA * nonterminal * q0)


def random_targets(lengths, terminated_last, gamma, seed=0):
    """One-step targets y = r + gamma (1 - terminated) Q^-(t + 1) of episodes of the given lengths, padded with inf."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
    reward, next_q = (
        torch.randn(len(lengths), t, generator=g),
        torch.randn(len(lengths), t, generator=g),
    )
    terminated = torch.zeros(len(lengths), t)
    for b, (length, ends) in enumerate(zip(lengths, terminated_last, strict=True)):
        terminated[b, length - 1] = float(ends)
    y = reward + gamma * (1 - terminated) * next_q
    return (
        y.masked_fill(~mask, math.inf),
        reward.masked_fill(~mask, math.inf),
        next_q,
        terminated,
        mask,
    )


def test_td_lambda_is_one_step_at_0_monte_carlo_at_1_and_pymarl2_between():
    """lambda_returns on padded [B, T] episodes (qmix_lstm.py's batch; qmix.py's after flat_lambda_returns)."""
    gamma, lengths, ends = 0.9, [5, 3, 5, 1], [True, False, False, True]
    y, reward, next_q, terminated, mask = random_targets(lengths, ends, gamma)
    torch.testing.assert_close(qmix.lambda_returns(y, reward, mask, gamma, 0.0)[mask], y[mask])
    monte_carlo = qmix.lambda_returns(y, reward, mask, gamma, 1.0)
    for b, (length, ends_terminated) in enumerate(zip(lengths, ends, strict=True)):
        for t in range(length):
            expected = sum(gamma**k * reward[b, t + k] for k in range(length - t))
            if not ends_terminated:  # a truncated end bootstraps from Q^-(s_L)
                expected += gamma ** (length - t) * next_q[b, length - 1]
            torch.testing.assert_close(monte_carlo[b, t], expected)
    # PyMARL2's build_td_lambda_targets, written per episode: G_t = r_t + gamma (1 - d_t) ((1 - l) Q_{t+1} + l G_{t+1})
    td_lambda, returns = 0.6, qmix.lambda_returns(y, reward, mask, gamma, 0.6)
    assert torch.isfinite(returns[mask]).all()  # the inf padding never reaches a real step
    for b, length in enumerate(lengths):
        following = next_q[b, length - 1]  # G_L = Q^-(s_L)
        for t in reversed(range(length)):
            continuation = (1 - td_lambda) * next_q[b, t] + td_lambda * following
            following = reward[b, t] + gamma * (1 - terminated[b, t]) * continuation
            torch.testing.assert_close(returns[b, t], following)


def test_default_targets_bring_a_late_reward_to_the_start_in_fewer_target_copies():
    """Issue 23's 3m collapse: at the end of the runs Q_tot at the first states was 6-8 (reward units) whether the
    greedy policy won every battle (discounted return ~17.5) or hid (~5.4). One-step targets move a reward back one
    step per target copy (every 200 episodes), and a 3m battle is won ~16 steps after the start: 16 copies, ~64k steps.
    With the default TD(lambda) targets, an update that fits its targets exactly between copies brings half of a
    reward 16 steps away to the first state in 7 copies."""
    args, length = qmix.Args(), 16
    rb = qmix.EpisodeBuffer(
        1, episode_limit=length, n_agents=1, obs_size=1, state_size=1, n_actions=1, seed=0
    )
    episode = {
        k: np.zeros(shape, dtype)
        for k, (shape, dtype) in qmix.episode_fields(length, 1, 1, 1, 1).items()
    }
    episode["obs"][:, 0, 0] = np.arange(length)
    episode["reward"][-1] = episode["terminated"][-1] = 1.0  # the win, and the battle is over
    episode["next_avail_actions"][:] = True
    rb.add(episode)
    batch = rb.sample(1, "cpu")
    values, copies = (
        torch.zeros(length + 1),
        0,
    )  # Q_tot(s_t) of the target networks; s_L is terminal
    while values[0] < args.gamma ** (length - 1) / 2 and copies < length:
        td_target = qmix.compute_td_target(
            batch, values[1:, None, None], sum_mixer, args.gamma
        )  # one agent
        if (
            args.td_lambda > 0
        ):  # as the script's update does (one episode: its flat steps are its row)
            td_target = qmix.lambda_returns(
                td_target[None], batch["reward"][None], batch["mask"], args.gamma, args.td_lambda
            )[0]
        values, copies = (
            torch.cat([td_target, torch.zeros(1)]),
            copies + 1,
        )  # fitted exactly, copied to the targets
    assert copies <= 7, f"half the value reached the first state after {copies} target copies"


def test_sampled_loss_is_the_mean_over_real_steps_and_ignores_padding():
    """sample() drops padded steps: the loss on its flat batch equals the masked mean over the padded
    [B, T] episodes, garbage in the padding changes nothing, and no NaN/inf appears."""
    torch.manual_seed(0)
    rb = qmix.EpisodeBuffer(
        4, episode_limit=6, n_agents=2, obs_size=4, state_size=3, n_actions=3, seed=0
    )
    lengths = [6, 2, 4, 1]
    for value, length in enumerate(lengths, 1):
        rb.add(fake_episode(rb, value, length))
    for key in ("obs", "state", "reward"):  # garbage in the padding: it must never reach the loss
        rb.fields[key][~rb.mask] = 1e30
    rb.fields["obs"] += (
        np.random.default_rng(0).normal(size=rb.fields["obs"].shape).astype(np.float32)
    )
    q_network = qmix.QNetwork(obs_size=4, n_actions=3, hidden_dim=8, num_layers=1)
    mixer = qmix.QMixer(2, 3, embed_dim=4)

    def q_tot(batch):
        q_taken = q_network(batch["obs"]).gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
        return mixer(q_taken, batch["state"])

    batch = rb.sample(4, "cpu")  # all four episodes
    assert batch["obs"].shape == (sum(lengths), 2, 4) and batch["mask"].sum() == sum(lengths)
    loss = torch.nn.functional.mse_loss(q_tot(batch), batch["reward"])
    grads = torch.autograd.grad(loss, list(q_network.parameters()) + list(mixer.parameters()))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    padded = {k: torch.from_numpy(v) for k, v in rb.fields.items()}
    mask = torch.from_numpy(rb.mask)
    err = torch.where(mask, q_tot(padded) - padded["reward"], 0.0)
    torch.testing.assert_close(loss, (err**2).sum() / mask.sum())


def fake_episode(rb, value, length):
    """An episode whose every entry is `value` (so a slot can be identified), actions 0..."""
    episode = {k: np.zeros_like(v[0]) for k, v in rb.fields.items()}
    for k in ("obs", "next_obs", "state", "next_state", "reward"):
        episode[k][:] = value
    episode["actions"][:] = int(value) % 3
    episode["terminated"][length - 1] = 1.0
    episode["next_avail_actions"][:] = False
    episode["next_avail_actions"][..., 0] = True
    return {k: v[:length] for k, v in episode.items()}  # its steps: name -> [T, ...]


def test_buffer_wraps_around_and_samples_only_each_episodes_own_steps():
    rb = qmix.EpisodeBuffer(
        3, episode_limit=6, n_agents=2, obs_size=4, state_size=5, n_actions=3, seed=0
    )
    lengths = {1: 6, 2: 2, 3: 4, 4: 3, 5: 1}
    for value, length in lengths.items():
        rb.add(fake_episode(rb, value, length))
    assert rb.size == 3 and rb.pos == 2
    # slots hold episodes 4, 5, 3 (episodes 1 and 2 were overwritten; their longer tails are not cleared, only masked)
    for slot, value in zip(range(3), (4, 5, 3), strict=True):
        length = lengths[value]
        assert rb.mask[slot].tolist() == [True] * length + [False] * (6 - length)
        assert (rb.fields["obs"][slot, :length] == value).all()
        assert (
            rb.fields["terminated"][slot, length - 1] == 1.0
            and rb.fields["terminated"][slot, : length - 1].sum() == 0
        )
    batch = rb.sample(3, "cpu")
    assert (
        sorted(batch["obs"][:, 0, 0].tolist()) == [3] * 4 + [4] * 3 + [5]
        and batch["terminated"].sum() == 3
    )


def resident_bytes():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc (Linux)"
)
def test_buffer_commits_memory_for_real_steps_only():
    """Padding is never written, so a buffer of short episodes in long slots costs the memory of their real steps,
    not of buffer_size episodes at the limit (which add() used to commit, padding included)."""
    sizes = dict(episode_limit=1000, n_agents=4, obs_size=256, state_size=512, n_actions=8)
    rb = qmix.EpisodeBuffer(100, **sizes, seed=0)
    slot_bytes = sum(a[0].nbytes for a in [*rb.fields.values(), rb.mask])
    assert slot_bytes > 1e7  # ~1.2 GB for 100 slots, virtual
    episode = {k: np.ones_like(v[0][:10]) for k, v in rb.fields.items()}
    before = resident_bytes()
    for _ in range(100):
        rb.add(episode)
    grown = resident_bytes() - before
    assert grown < 100 * slot_bytes / 50  # real steps: 1% of the slots, plus page rounding


def test_buffer_samples_only_filled_episodes():
    rb = qmix.EpisodeBuffer(
        50, episode_limit=5, n_agents=2, obs_size=3, state_size=2, n_actions=3, seed=0
    )
    for value in range(1, 8):
        rb.add(fake_episode(rb, value, 5))
    seen = set()
    for _ in range(200):
        batch = rb.sample(4, "cpu")
        values = batch["obs"][::5, 0, 0].tolist()  # [M = 4 episodes x 5 steps, N, obs]
        assert len(set(values)) == 4, "episodes in one batch must be distinct"
        seen.update(values)
    assert seen == set(range(1, 8)), "every filled episode is sampled, no empty slot ever"


def test_buffer_sample_holds_the_real_steps_only():
    rb = qmix.EpisodeBuffer(
        2, episode_limit=10, n_agents=1, obs_size=1, state_size=1, n_actions=2, seed=0
    )
    rb.add(fake_episode(rb, 1, 3))
    rb.add(fake_episode(rb, 2, 4))
    batch = rb.sample(2, "cpu")
    assert (
        batch["obs"].shape == (7, 1, 1)
        and sorted(batch["obs"].flatten().tolist()) == [1] * 3 + [2] * 4
    )
    # steps stay in order within each episode: the terminated step is the last of its episode's block
    values, terminated = batch["obs"].flatten(), batch["terminated"].bool()
    assert (
        terminated.tolist() == torch.cat([values[1:] != values[:-1], torch.tensor([True])]).tolist()
    )
    assert batch["obs"].dtype == torch.float32 and batch["actions"].dtype == torch.int64
    assert batch["next_avail_actions"].dtype == torch.bool and set(batch) == {*rb.fields, "mask"}


def test_online_next_q_reuses_the_obs_forward_exactly():
    """Double Q's online Q at next_obs is the obs forward shifted one row, except where a row's next_obs is not the
    next row's obs (episode ends): on real episodes of mixed lengths it equals a forward of next_obs."""
    from cleanmarl.env import make_env

    envs = [
        make_env("lbf", "Foraging-8x8-2p-2f-coop-v3", seed=s, time_limit=limit)
        for s, limit in ((0, 12), (1, 5))
    ]
    env = envs[0]
    torch.manual_seed(0)
    args = qmix.Args()  # ids and last actions: next_obs is the next row's obs but for the last
    obs_size = env.obs_size + env.n_agents + env.n_actions
    q_network = qmix.QNetwork(obs_size, env.n_actions, hidden_dim=16, num_layers=1)
    rb = qmix.EpisodeBuffer(6, 12, env.n_agents, obs_size, env.state_size, env.n_actions, seed=0)
    rng = np.random.default_rng(0)
    for i in range(6):
        rb.add(qmix.run_episode(envs[i % 2], q_network, args, 1.0, rng)[0])
    assert sorted(set(rb.mask.sum(1))) == [5, 12]
    batch = rb.sample(6, "cpu")
    q_values, forwarded = q_network(batch["obs"]), []
    q_network.register_forward_hook(lambda module, inputs, output: forwarded.append(len(inputs[0])))
    online_next_q = qmix.online_next_q_values(q_network, q_values, batch)
    assert forwarded == [6]  # one row per episode, its last: the rest reuse the obs forward
    with torch.no_grad():
        torch.testing.assert_close(
            online_next_q, q_network(batch["next_obs"]), rtol=1e-6, atol=1e-6
        )
    assert (
        not online_next_q.requires_grad
    )  # a target: no gradient may flow through the reused forward


SCRIPT_STREAMS = "map(np.random.default_rng, np.random.SeedSequence(args.seed).spawn(2))"


def test_independent_rngs_share_no_bits_with_each_other_or_the_envs():
    """Exploration and replay sampling draw from streams of their own (the script's SeedSequence
    children), not the one gymnasium seeds envs with, nor the vector envs' (env_seeds)."""
    from gymnasium.utils import seeding

    assert f"rng, buffer_rng = {SCRIPT_STREAMS}" in (ROOT / "cleanmarl" / "qmix.py").read_text()

    def draws(rng):
        return rng.integers(0, 2**32, size=8).tolist()

    children = np.random.SeedSequence(7).spawn(2)  # the script's line, at --seed 7
    streams = [draws(np.random.default_rng(child)) for child in children]
    env_stream = draws(seeding.np_random(7)[0])
    assert streams[0] != streams[1] and env_stream not in streams
    assert draws(np.random.default_rng(7)) == env_stream  # the reason: one seed, one stream
    vector = [draws(np.random.default_rng(s)) for s in system.env_seeds(7, 4, 0)[1:]]
    assert not set(map(tuple, vector)) & set(map(tuple, streams))
    again = np.random.SeedSequence(7).spawn(2)
    assert [draws(np.random.default_rng(child)) for child in again] == streams  # reproducible


def test_linear_schedule():
    assert qmix.linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert qmix.linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert qmix.linear_schedule(1.0, 0.05, 100, 100) == pytest.approx(0.05)
    assert qmix.linear_schedule(1.0, 0.05, 100, 10_000) == 0.05


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), epsilon=st.floats(0.0, 1.0))
def test_select_actions_only_available(seed, epsilon):
    rng = np.random.default_rng(seed)
    avail = rng.random((4, 6)) < 0.4
    avail[np.arange(4), rng.integers(0, 6, 4)] = True  # at least one per agent
    q_values = rng.normal(size=(4, 6)) * 10
    actions = qmix.select_actions(q_values, avail, epsilon, rng)
    assert avail[np.arange(4), actions].all()
    if epsilon == 0.0:
        assert (actions == np.where(avail, q_values, -np.inf).argmax(-1)).all()


def test_select_actions_explores_per_agent():
    """With epsilon = 1 every available action of every agent is drawn, independently per agent."""
    rng = np.random.default_rng(0)
    avail = np.array([[True, True, False], [True, True, True]])
    q_values = np.zeros((2, 3))
    draws = np.array([qmix.select_actions(q_values, avail, 1.0, rng) for _ in range(600)])
    assert set(draws[:, 0]) == {0, 1} and set(draws[:, 1]) == {0, 1, 2}
    assert len({tuple(d) for d in draws}) == 6  # all joint combinations: agents draw independently


class FixedEnv:
    """Two agents, four steps, the same observations whatever they do; action 2 of agent 0 is never
    available."""

    n_agents, obs_size, n_actions = 2, 7, 5
    obs = np.random.default_rng(0).normal(size=(4, 2, 7)).astype(np.float32)
    avail = np.ones((2, 5), bool)
    avail[0, 2] = False

    def reset(self):
        self.t = 0
        return self.obs[0], np.zeros(3, np.float32), self.avail, {}

    def step(self, actions):
        self.taken.append(actions)
        self.t += 1
        done = self.t == len(self.obs)
        return self.obs[self.t % 4], np.zeros(3, np.float32), self.avail, 0.0, done, False, {}


def test_acting_is_the_greedy_action_of_the_network_being_trained():
    """run_episode acts with q_network itself: greedy, each action is the argmax of its Q-values
    over the available actions, after an optimizer step too (no copy of the weights)."""
    torch.manual_seed(0)
    q_network = qmix.QNetwork(obs_size=7, n_actions=5, hidden_dim=16, num_layers=2)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=0.5)
    env = FixedEnv()
    for _ in range(2):
        env.taken = []
        qmix.run_episode(env, q_network, RAW, 0.0, None)
        with torch.no_grad():
            q_values = q_network(torch.from_numpy(env.obs)).masked_fill(
                ~torch.tensor(env.avail), -1e9
            )
        np.testing.assert_array_equal(np.stack(env.taken), q_values.argmax(-1).numpy())
        q_network(torch.from_numpy(env.obs)).pow(2).sum().backward()
        optimizer.step()


def flag_error(args):
    """check_flags' one line for args, or None."""
    try:
        flags.check_flags(args)
    except ValueError as e:
        assert "\n" not in str(e)
        return str(e)
    return None


def test_check_flags_rejects_bad_values_and_combinations():
    assert flag_error(qmix.Args()) is None
    assert "batch-size" in flag_error(qmix.Args(batch_size=20, buffer_size=10))
    assert "--seed" in flag_error(qmix.Args(seed=-1)) and "--seed" in flag_error(
        qmix.Args(seed=2**31)
    )
    assert flag_error(qmix.Args(seed=0)) is None and flag_error(qmix.Args(seed=2**31 - 1)) is None
    assert "--exp-name" in flag_error(qmix.Args(exp_name="a/b"))
    assert "--num-layers" in flag_error(qmix.Args(num_layers=-1))
    assert flag_error(qmix.Args(num_layers=0)) is None
    assert "--start-e" in flag_error(qmix.Args(start_e=2)) and "--end-e" in flag_error(
        qmix.Args(end_e=-1)
    )
    assert "load-model" in flag_error(qmix.Args(eval_only=True))
    assert "polyak" in flag_error(qmix.Args(polyak=0.0))
    assert "learning-rate" in flag_error(qmix.Args(learning_rate=-1e-3))
    assert "--td-lambda" in flag_error(qmix.Args(td_lambda=1.5))
    assert flag_error(qmix.Args(td_lambda=1.0)) is None
    assert "--exploration-fraction" in flag_error(qmix.Args(exploration_fraction=0.0))


@pytest.mark.parametrize("value", [0.0, -0.01, 0.1, 1 / 3, 1e4])
def test_running_std_of_a_constant_is_zero(value):
    """float32 rounding left m2 > 0 for some constants (std 9e-10 for -0.01): rewards / std would explode."""
    running = qmix.RunningStats()
    for _ in range(20):
        running.update(np.full(50, value, dtype=np.float32))
    assert running.std == 0.0
    running.update(
        np.array([value + 1.0], dtype=np.float32)
    )  # one real difference among 1001 values
    assert running.std == pytest.approx(np.sqrt(1000) / 1001, rel=1e-3)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_batches=st.integers(1, 6))
def test_running_std_matches_numpy(seed, n_batches):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=rng.integers(1, 50)) for _ in range(n_batches)]
    running = qmix.RunningStats()
    for batch in batches:
        running.update(batch)
    everything = np.concatenate(batches)
    expected = everything.std()
    assert running.std == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_select_actions_explores_with_a_coin_per_agent():
    """Each agent flips its own exploration coin: at epsilon 0.5 most joint actions mix explored and greedy agents.
    With one coin for the team, agents would explore all together (mixed only when a random action hits the greedy
    one, ~1 in 50 here)."""
    rng = np.random.default_rng(0)
    n_agents, n_actions = 4, 50
    q_values = np.zeros((n_agents, n_actions))
    q_values[:, 0] = 1.0  # greedy: action 0 for every agent
    avail = np.ones((n_agents, n_actions), dtype=bool)
    explored = np.array(
        [qmix.select_actions(q_values, avail, 0.5, rng) != 0 for _ in range(400)]
    )  # [draws, N]
    mixed = explored.any(1) & ~explored.all(1)
    assert (
        mixed.mean() > 0.6
    )  # per-agent coins: 1 - 2 * 0.5**4 = 0.875 (less the random draws of action 0)
    assert 0.4 < explored.mean() < 0.6


def test_running_std_of_one_value_is_zero():
    """One reward has no spread: a std of 1 would set a scale, and the first real std would rescale Q_tot from 1 (the
    bug the reward-scale rule avoids when every reward so far is 0)."""
    stats = qmix.RunningStats()
    stats.update(np.array([0.0], dtype=np.float32))
    assert stats.std == 0.0 and stats.mean == 0.0
    assert qmix.RunningStats().std == 0.0


class ScriptedEnv:
    """A stand-in env with the cleanmarl API whose avail masks change every step (mask at step t: action t % 3 and 3
    available), ending after `length` steps, terminated or truncated."""

    n_agents, n_actions, obs_size, state_size = 2, 4, 3, 5

    def __init__(self, length, terminated):
        self.length, self.ends_terminated = length, terminated

    def avail(self, t):
        avail = np.zeros((self.n_agents, self.n_actions), dtype=bool)
        avail[:, [t % 3, 3]] = True
        avail[1, 3] = t % 2 == 0  # agent 1's second action comes and goes
        return avail

    def reset(self):
        self.t = 0
        return np.zeros((2, 3), np.float32), np.zeros(5, np.float32), self.avail(0), {}

    def step(self, actions):
        assert self.avail(self.t)[[0, 1], actions].all(), "an unavailable action was taken"
        self.t += 1
        end = self.t == self.length
        obs, state = np.full((2, 3), self.t, np.float32), np.full(5, self.t, np.float32)
        terminated, truncated = end and self.ends_terminated, end and not self.ends_terminated
        return obs, state, self.avail(self.t), float(self.t), terminated, truncated, {}


def recorded_episode(env, episode_limit=8):
    torch.manual_seed(0)
    q_network = qmix.QNetwork(env.obs_size, env.n_actions, hidden_dim=8, num_layers=1)
    episode, ep_return, _ = qmix.run_episode(env, q_network, RAW, 0.5, np.random.default_rng(0))
    assert len(episode["reward"]) <= episode_limit
    return episode, ep_return, len(episode["reward"])


@pytest.mark.parametrize("terminated", [True, False])
def test_run_episode_stores_termination_never_truncation(terminated):
    """The stored flag stops the bootstrap: a truncated last step must store 0 (pymarl#11), a real end 1."""
    episode, ep_return, length = recorded_episode(ScriptedEnv(5, terminated))
    assert length == 5 and ep_return == 1 + 2 + 3 + 4 + 5
    assert episode["terminated"][:5].tolist() == [0, 0, 0, 0, float(terminated)]
    assert episode["reward"][:5].tolist() == [1, 2, 3, 4, 5]


def test_run_episode_stores_on_real_envs_termination_never_truncation():
    """The same on LBF: a 5-step time limit truncates (flag 0); a real termination (all food eaten) stores 1."""
    from cleanmarl.env import make_env

    env = make_env("lbf", "Foraging-8x8-2p-2f-coop-v3", seed=0, time_limit=5)
    episode, _, length = recorded_episode(env, episode_limit=5)
    assert length == 5 and not episode["terminated"].any()
    env = make_env("gym", "tests.two_step:TwoStep-v0", seed=0)  # terminates at its second step
    episode, _, length = recorded_episode(env, episode_limit=2)
    assert length == 2 and episode["terminated"].tolist() == [0.0, 1.0]


def test_fixed_horizon_ends_the_task_and_its_target_is_the_reward():
    """Issue 23's cause: MPE's 25 steps (and SMAC's map limits) came back as truncation, so the last step's target
    bootstrapped from a state no target is ever learned for. With only negative rewards the mean TD target rose above
    0 from ~180k steps and the greedy return fell. The horizon is part of these tasks: its step stores terminated = 1,
    so its target is its reward whatever the target networks say, and obs and state carry t / horizon. A time_limit
    below the horizon still cuts: stored 0, it bootstraps."""
    from cleanmarl.env import make_env

    pytest.importorskip("mpe2", reason="needs mpe2: pip install mpe2")
    env = make_env("pz", "simple_spread_v3", seed=0)
    episode, _, length = recorded_episode(env, episode_limit=25)
    assert length == 25 and episode["terminated"].tolist() == [0.0] * 24 + [1.0]
    np.testing.assert_allclose(episode["next_state"][:, -1], np.arange(1, 26) / 25)
    np.testing.assert_allclose(
        episode["obs"][:, :, env.obs_size - 1], np.arange(25)[:, None].repeat(3, 1) / 25
    )
    batch = {k: torch.from_numpy(v) for k, v in episode.items()}
    target_next_q = torch.full((25, env.n_agents, env.n_actions), 1e3)  # a runaway bootstrap
    mixer = qmix.QMixer(env.n_agents, env.state_size, 8)
    td_target = qmix.compute_td_target(batch, target_next_q, mixer, GAMMA)
    assert td_target[-1] == batch["reward"][-1]
    assert (td_target[:-1] - batch["reward"][:-1]).abs().min() > 1  # every other step bootstraps
    env = make_env("pz", "simple_spread_v3", seed=0, time_limit=10)
    episode, _, length = recorded_episode(env, episode_limit=10)
    assert length == 10 and not episode["terminated"].any()


def test_run_episode_stores_the_mask_each_step_returned():
    """next_avail_actions[t] is the mask env.step returned at step t (the next state's), not the mask acted on."""
    env = ScriptedEnv(6, terminated=False)
    episode, _, length = recorded_episode(env)
    assert length == 6
    for t in range(6):
        np.testing.assert_array_equal(episode["next_avail_actions"][t], env.avail(t + 1))
    np.testing.assert_array_equal(
        episode["obs"][1], np.full((2, 3), 1.0)
    )  # obs[t + 1] is next_obs[t]
    np.testing.assert_array_equal(episode["next_obs"][0], episode["obs"][1])


def test_make_run_dir_never_shares_a_directory(tmp_path):
    """Two runs with one name (same env, exp name, seed and second) get two directories."""
    first = layout.make_run_dir("3m__qmix__1__1700000000", root=str(tmp_path / "runs"))
    second = layout.make_run_dir("3m__qmix__1__1700000000", root=str(tmp_path / "runs"))
    third = layout.make_run_dir("3m__qmix__1__1700000000", root=str(tmp_path / "runs"))
    assert first.endswith("1700000000") and second.endswith("1700000000-2") and third.endswith("-3")
    assert len({first, second, third}) == 3 and all(
        os.path.isdir(d) for d in (first, second, third)
    )


def load_checkpoint(path):
    return checkpoints.load_checkpoint(path, qmix.CHECKPOINT_FLAGS, qmix.CHECKPOINT_NETS)


def test_load_checkpoint_names_what_is_wrong(tmp_path):
    nets = {name: {} for name in qmix.CHECKPOINT_NETS}
    torch.save(nets | {"args": vars(qmix.Args()), "reward_scale": 2.0}, tmp_path / "ok.pt")
    checkpoint = load_checkpoint(str(tmp_path / "ok.pt"))
    assert set(checkpoint) == {*qmix.CHECKPOINT_NETS, "args", "reward_scale"}
    torch.save(
        {"q_network": {}, "mixer": {}, "args": vars(qmix.Args())}, tmp_path / "no_targets.pt"
    )
    with pytest.raises(ValueError, match="no networks and flags in it"):
        load_checkpoint(str(tmp_path / "no_targets.pt"))
    torch.save(nets | {"args": vars(qmix.Args())}, tmp_path / "no_scale.pt")
    with pytest.raises(ValueError, match="is damaged .reward_scale None"):
        load_checkpoint(str(tmp_path / "no_scale.pt"))
    torch.save(nets | {"args": {"env_name": "3m"}}, tmp_path / "flagless.pt")
    with pytest.raises(ValueError, match="its flags lack env_type"):
        load_checkpoint(str(tmp_path / "flagless.pt"))
    torch.save(
        {"q_network": torch.zeros(2), "mixer": {}, "args": vars(qmix.Args())},
        tmp_path / "tensor_net.pt",
    )
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "dict.pt")
    for name in ("truncated", "text", "empty", "tensor", "dict", "tensor_net"):
        with pytest.raises(ValueError, match="is not a cleanmarl checkpoint") as error:
            load_checkpoint(str(tmp_path / f"{name}.pt"))
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no file"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def checkpoint_mismatch(args, trained):
    return flags.flag_mismatch(args, trained, qmix.CHECKPOINT_FLAGS)


def test_checkpoint_mismatch_names_the_flag():
    trained = vars(qmix.Args(env_type="lbf", hidden_dim=128))
    assert (
        checkpoint_mismatch(
            qmix.Args(env_type="lbf", hidden_dim=128, seed=5, num_eval_ep=20), trained
        )
        is None
    )
    assert (
        checkpoint_mismatch(qmix.Args(env_type="lbf", hidden_dim=128, time_limit=10), trained)
        is None
    )
    message = checkpoint_mismatch(
        qmix.Args(env_type="lbf", env_name="Foraging-15x15-2p-2f-coop-v3"), trained
    )
    assert message == (
        "--load-model was trained with --env-name Foraging-8x8-2p-2f-coop-v3, asked for Foraging-15x15-2p-2f-coop-v3"
    )
    assert "--hidden-dim 128, asked for 64" in checkpoint_mismatch(
        qmix.Args(env_type="lbf"), trained
    )


def test_agent_inputs_are_obs_then_one_hot_id_then_one_hot_last_action():
    """What the agents see is built in the script: [obs, id, last action] per agent, the last action
    all zeros at t = 0; each part dropped by its flag; any leading dims (the vector envs' [E, N, O])."""
    obs = np.arange(6, dtype=np.float32).reshape(2, 3)
    first = qmix.agent_inputs(obs, None, 4, qmix.Args())
    np.testing.assert_array_equal(first, [[0, 1, 2, 1, 0, 0, 0, 0, 0], [3, 4, 5, 0, 1, 0, 0, 0, 0]])
    later = qmix.agent_inputs(obs, np.array([3, 1]), 4, qmix.Args())
    np.testing.assert_array_equal(later[:, 5:], [[0, 0, 0, 1], [0, 1, 0, 0]])
    assert later.dtype == np.float32
    assert qmix.agent_inputs(obs, None, 4, RAW).tolist() == obs.tolist()
    no_ids = qmix.agent_inputs(obs, np.array([0, 2]), 4, qmix.Args(agent_ids=False))
    np.testing.assert_array_equal(no_ids[:, 3:], [[1, 0, 0, 0], [0, 0, 1, 0]])
    stacked = qmix.agent_inputs(np.stack([obs, obs]), np.array([[3, 1], [0, 0]]), 4, qmix.Args())
    np.testing.assert_array_equal(stacked[0], later)
    np.testing.assert_array_equal(stacked[1, :, 3:5], np.eye(2))


def test_run_episode_feeds_and_stores_each_agents_previous_action():
    """obs[t + 1]'s last-action block is the one-hot of actions[t] (obs[0]'s is zeros), and the id
    block is each agent's own: the network acts on what the buffer stores."""
    env = ScriptedEnv(5, terminated=True)
    obs_size = env.obs_size + env.n_agents + env.n_actions
    q_network = qmix.QNetwork(obs_size, env.n_actions, hidden_dim=8, num_layers=1)
    fed = []
    q_network.register_forward_hook(lambda module, inputs, output: fed.append(inputs[0].numpy()))
    episode, _, _ = qmix.run_episode(env, q_network, qmix.Args(), 0.5, np.random.default_rng(0))
    last = episode["obs"][:, :, -env.n_actions :]
    assert not last[0].any()
    np.testing.assert_array_equal(last[1:], np.eye(env.n_actions)[episode["actions"][:-1]])
    np.testing.assert_array_equal(episode["obs"][:, :, 3:5], np.broadcast_to(np.eye(2), (5, 2, 2)))
    np.testing.assert_array_equal(np.stack(fed), episode["obs"])
