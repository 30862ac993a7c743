"""Conformance suite for cleanmarl.env: every family must honour the contract in cleanmarl/env/base.py.

A family whose package is missing is skipped with the install command. SMAClite's steps cost milliseconds
(180-940 random steps/s on 3m, by its physics path: docs/env.md), so its episodes here are few and short.
"""

import sys
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanmarl.env import ENV_TYPES, EnvError, make_env, resolve_env_type
from cleanmarl.env import smaclite as smaclite_module
from cleanmarl.env.base import require
from cleanmarl.env.lbf import LBFEnv
from cleanmarl.env.pz import MPE_COMPETITIVE, MPE_ENVS, PZ_FAMILIES
from tests import tuple_env

LBF_NAME = "Foraging-8x8-2p-2f-coop-v3"
LBF_LOAD = 5  # lbforaging's Action.LOAD; the only action that can collect food
SMACLITE_INSTALL = "pip install --no-deps git+https://github.com/uoe-agents/smaclite.git, then pip install -e '.[smaclite]'"


# The package each family needs, and how to install it (a missing one skips the family).
PACKAGES = {
    "lbf": ("lbforaging", "pip install lbforaging"),
    "mpe": ("mpe2", "pip install mpe2"),
    "tuple": ("gymnasium", "pip install gymnasium"),
    "rware": ("rware", "pip install rware (or pip install -e '.[rware]')"),
    "smaclite": ("smaclite", SMACLITE_INSTALL),
}


@dataclass(frozen=True)
class Case:
    id: str
    family: str  # a key of PACKAGES
    env_type: str
    env_name: str
    n_agents: int
    n_actions: int
    own_obs_size: int  # the family's own per-agent obs size (without the time feature of a horizon)
    state_size: int  # the family's own (without the time feature)
    episode_limit: int
    short_limit: int  # a time_limit shorter than episode_limit
    horizon: int | None = (
        None  # the task's fixed horizon: reaching it terminates, obs and state end with t / horizon
    )


CASES = [
    Case("lbf", "lbf", "lbf", LBF_NAME, 2, 6, 12, 24, 50, 10),
    Case("mpe-spread", "mpe", "pz", "simple_spread_v3", 3, 5, 18, 54, 25, 7, horizon=25),
    Case(
        "mpe-speaker-listener",
        "mpe",
        "pz",
        "simple_speaker_listener_v4",
        2,
        5,
        11,
        14,
        25,
        7,
        horizon=25,
    ),
    Case("tuple", "tuple", "gym", tuple_env.ENV_ID, 3, 4, 4, 4, 20, 5),
    Case("tuple-masked", "tuple", "gym", tuple_env.MASKED_ENV_ID, 3, 4, 4, 4, 20, 5),
    Case("rware", "rware", "gym", "rware:rware-tiny-2ag-v2", 2, 5, 71, 142, 500, 12),
    Case("smaclite-3m", "smaclite", "smaclite", "3m", 3, 9, 30, 48, 60, 5, horizon=60),
    Case("smaclite-2s3z", "smaclite", "smaclite", "2s3z", 5, 11, 80, 120, 120, 5, horizon=120),
]
CHEAP = ("lbf", "mpe", "tuple")  # families cheap enough for hypothesis to play whole episodes


@pytest.fixture(params=CASES, ids=lambda c: c.id, scope="module")
def case(request):
    package, install = PACKAGES[request.param.family]
    pytest.importorskip(
        package, reason=f"{request.param.id} needs the {package} package: {install}"
    )
    return request.param


def make(case, **overrides):
    return make_env(case.env_type, case.env_name, **{"seed": 0, **overrides})


# ---------------------------------------------------------------- policies: (env, obs, avail) -> actions [N]


def random_policy(env, obs, avail):
    return env.sample_actions()


def idle_policy(case):
    """Actions that can never end the task, so only the time limit ends the episode (None: no such policy)."""
    if case.family == "lbf":
        rng = np.random.default_rng(0)

        def no_load(
            env, obs, avail
        ):  # uniform over available moves, never LOAD: food stays on the field
            avail = avail.copy()
            avail[:, LBF_LOAD] = False
            return np.array([rng.choice(np.flatnonzero(a)) for a in avail])

        return no_load
    if case.family == "tuple":
        return stay_policy
    if case.family in ("mpe", "rware"):
        return random_policy  # neither ends an episode before its time limit
    return None


def stay_policy(env, obs, avail):
    return np.full(env.n_agents, tuple_env.STAY)


def greedy_tuple_policy(env, obs, avail):
    """Walk every agent straight to the goal, read from its own observation (position, goal)."""
    pos, goal = obs[:, 0], obs[:, 1]
    return np.where(
        pos < goal, tuple_env.RIGHT, np.where(pos > goal, tuple_env.LEFT, tuple_env.STAY)
    )


# ---------------------------------------------------------------- contract checks


def check_arrays(env, obs, state, avail):
    n, a = env.n_agents, env.n_actions
    assert (
        isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.shape == (n, env.obs_size)
    )
    assert (
        isinstance(state, np.ndarray)
        and state.dtype == np.float32
        and state.shape == (env.state_size,)
    )
    assert isinstance(avail, np.ndarray) and avail.dtype == np.bool_ and avail.shape == (n, a)
    assert np.isfinite(obs).all() and np.isfinite(state).all()
    assert avail.any(axis=1).all(), f"an agent has no available action: {avail}"
    # obs is a fresh array: the caller may write into it (an LBF state is its obs reshaped, for one).
    assert not np.shares_memory(obs, state)


def run_episode(env, policy, seed=None, max_steps=None):
    """Reset, then step with `policy` until the episode ends (or max_steps), checking the contract on the way.

    -> (reset, steps): reset = (obs, state, avail, info); steps = [(actions, obs, state, avail, reward,
    terminated, truncated, info)].
    """
    reset = env.reset(seed=seed)
    assert len(reset) == 4 and isinstance(reset[3], dict)
    check_arrays(env, *reset[:3])
    obs, _, avail, _ = reset
    steps, previous = [], [(x, x.copy()) for x in reset[:3]]
    while max_steps is None or len(steps) < max_steps:
        actions = np.asarray(policy(env, obs.copy(), avail))
        assert actions.shape == (env.n_agents,) and np.issubdtype(actions.dtype, np.integer)
        assert avail[np.arange(env.n_agents), actions].all(), (
            f"unavailable actions {actions} under {avail}"
        )
        out = env.step(actions)
        assert len(out) == 7
        obs, state, avail, reward, terminated, truncated, info = out
        check_arrays(env, obs, state, avail)
        assert type(reward) is float
        assert type(terminated) is bool and type(truncated) is bool
        assert not (terminated and truncated)
        assert isinstance(info, dict) and "rewards" in info
        rewards = np.asarray(info["rewards"])
        assert rewards.ndim == 1 and len(rewards) in (1, env.n_agents)
        assert reward == pytest.approx(float(rewards.sum()), rel=1e-6, abs=1e-6)
        # Arrays handed out earlier must not change under the caller (rollouts store them).
        for array, copy in previous:
            np.testing.assert_array_equal(array, copy)
        previous = [(x, x.copy()) for x in (obs, state, avail)]
        steps.append((actions, obs, state, avail, reward, terminated, truncated, info))
        t = len(steps)
        assert t <= env.episode_limit
        if truncated:
            assert t == env.episode_limit, f"truncated at step {t}, limit {env.episode_limit}"
        if t == env.episode_limit:
            assert terminated or truncated, "the episode went past its limit"
        if terminated or truncated:
            break
    return reset, steps


def compare_steps(case):
    """Steps compared between runs: whole episodes, but fewer for the slow or long ones."""
    return {"smaclite": 20, "rware": 100}.get(case.family)


def assert_same_trajectory(a, b):
    (reset_a, steps_a), (reset_b, steps_b) = a, b
    for x, y in zip(reset_a[:3], reset_b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(steps_a) == len(steps_b)
    for sa, sb in zip(steps_a, steps_b, strict=True):
        for x, y in zip(sa[:7], sb[:7], strict=True):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(sa[7]["rewards"], sb[7]["rewards"])


def trajectories_equal(a, b):
    try:
        assert_same_trajectory(a, b)
    except AssertionError:
        return False
    return True


# ---------------------------------------------------------------- conformance, every family


def test_attributes(case):
    env = make(case)
    for name in ("n_agents", "n_actions", "obs_size", "state_size", "episode_limit"):
        assert type(getattr(env, name)) is int, name
    assert env.n_agents == case.n_agents
    assert env.n_actions == case.n_actions
    timed = case.horizon is not None  # the time feature t / horizon
    assert env.obs_size == case.own_obs_size + timed  # no agent ids, no last action
    assert env.state_size == case.state_size + timed
    assert env.episode_limit == case.episode_limit
    assert env.horizon == case.horizon


def test_random_episode(case):
    """A whole episode with sample_actions(): every step meets the contract and only available actions are drawn."""
    env = make(case)
    _, steps = run_episode(env, random_policy, seed=1)
    assert steps[-1][5] or steps[-1][6], "run_episode stops only at an episode end"
    if case.family == "smaclite":
        assert type(steps[-1][7]["battle_won"]) is bool


def test_sample_actions_uniform_over_available(case):
    env = make(case)
    _, _, avail, _ = env.reset(seed=2)
    draws = np.array([env.sample_actions() for _ in range(3000)])  # [draws, N]
    assert draws.shape == (3000, env.n_agents) and np.issubdtype(draws.dtype, np.integer)
    for i in range(env.n_agents):
        allowed = np.flatnonzero(avail[i])
        values, counts = np.unique(draws[:, i], return_counts=True)
        np.testing.assert_array_equal(values, allowed)
        np.testing.assert_allclose(counts / len(draws), 1 / len(allowed), atol=0.05)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_sample_actions_available_for_any_seed(case, seed):
    env = make(case, seed=seed)
    run_episode(env, random_policy, max_steps=8)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_any_available_actions_keep_the_contract(case, data):
    """Hypothesis picks the actions (not uniformly, and shrinks): a whole episode still meets the contract."""
    if case.family not in CHEAP:
        pytest.skip(
            f"{case.family} episodes are too slow for many examples; test_random_episode covers it"
        )
    env = make(case, seed=data.draw(st.integers(0, 2**31 - 1), label="seed"))

    def drawn(env, obs, avail):
        picks = data.draw(
            st.lists(st.integers(0, 63), min_size=env.n_agents, max_size=env.n_agents)
        )
        return np.array([np.flatnonzero(a)[p % a.sum()] for a, p in zip(avail, picks, strict=True)])

    _, steps = run_episode(env, drawn)
    assert steps[-1][5] or steps[-1][6]


def test_time_limit_truncates(case):
    env = make(case, time_limit=case.short_limit)
    assert env.episode_limit == case.short_limit
    _, steps = run_episode(env, idle_policy(case) or random_policy, seed=3)
    assert len(steps) == case.short_limit
    assert steps[-1][6] is True and steps[-1][5] is False
    if case.family == "smaclite":
        assert steps[-1][7]["battle_won"] is False


def test_episode_limit_ends_the_episode(case):
    """With actions that cannot end the task, the env's own limit ends the episode: as a truncation (the target
    bootstraps), or, where the limit is the task's fixed horizon (MPE, SMAC), as a termination (issue 23)."""
    policy = idle_policy(case)
    if policy is None:
        pytest.skip(
            f"no policy keeps a {case.env_name} battle going: test_smaclite_map_limit_is_the_horizon covers it"
        )
    env = make(case)
    _, steps = run_episode(env, policy, seed=4)
    assert len(steps) == case.episode_limit
    ends = [False] * (case.episode_limit - 1) + [True]
    assert [s[5] for s in steps] == (ends if case.horizon else [False] * len(steps))  # terminated
    assert [s[6] for s in steps] == ([False] * len(steps) if case.horizon else ends)  # truncated


def test_horizon_time_feature(case):
    """Where the horizon is part of the task, each agent's obs and the state end with the elapsed fraction
    t / horizon, also when a shorter time_limit cuts the episode; elsewhere there is no such feature."""
    if case.horizon is None:
        assert make(case).horizon is None and make(case).state_size == case.state_size
        return
    for time_limit, length in ((None, case.horizon), (case.short_limit, case.short_limit)):
        env = make(case, time_limit=time_limit)
        reset, steps = run_episode(env, idle_policy(case) or random_policy, seed=5)
        obs = np.stack([reset[0]] + [s[1] for s in steps])
        state = np.stack([reset[1]] + [s[2] for s in steps])
        elapsed = np.arange(len(steps) + 1, dtype=np.float32) / case.horizon
        # the time is the last column, nothing after it
        assert obs.shape[2] == case.own_obs_size + 1
        np.testing.assert_allclose(obs[:, :, -1], elapsed[:, None].repeat(case.n_agents, 1))
        np.testing.assert_allclose(state[:, -1], elapsed)
        if idle_policy(case):
            assert len(steps) == length


def test_time_limit_beyond_the_horizon_is_refused(case):
    if case.horizon is None:
        return
    with pytest.raises(EnvError) as e:
        make(case, time_limit=case.horizon + 1)
    assert_one_line(
        e, f"time_limit {case.horizon + 1}", f"after {case.horizon} env steps", f"<= {case.horizon}"
    )


def test_same_seed_same_trajectory(case):
    """make_env(seed=s) then reset() replays exactly what reset(seed=s) on another instance gives."""
    max_steps = compare_steps(case)
    a = run_episode(make(case, seed=5), random_policy, max_steps=max_steps)
    b = run_episode(make(case, seed=99), random_policy, seed=5, max_steps=max_steps)
    assert_same_trajectory(a, b)


def test_reset_with_same_seed_repeats_episode(case):
    """Nothing from an earlier episode may leak into the next: reset(seed=s) always gives the same episode.

    (SMAClite keeps its last joint action, part of the state, across resets unless the wrapper clears it.)
    """
    max_steps = compare_steps(case)
    env = make(case)
    first = run_episode(env, random_policy, seed=6, max_steps=max_steps)
    run_episode(env, random_policy, seed=7, max_steps=max_steps)
    again = run_episode(env, random_policy, seed=6, max_steps=max_steps)
    assert_same_trajectory(first, again)


def test_different_seeds_differ(case):
    max_steps = compare_steps(case)
    a = run_episode(make(case), random_policy, seed=0, max_steps=max_steps)
    b = run_episode(make(case), random_policy, seed=1, max_steps=max_steps)
    assert not trajectories_equal(a, b)
    if case.family != "smaclite":  # SMAClite armies always start at the same positions
        assert not np.array_equal(a[0][1], b[0][1]), "the seed does not reach the env's start state"


def test_obs_hold_no_agent_ids_and_no_last_action(case):
    """The env hands out each agent's own observation (and the time feature of a horizon), nothing more: the agent
    ids and the last action one-hot are the training script's to append (qmix.py's agent_inputs). So obs_size is the
    family's own size and the env keeps no agent_ids / last_action / raw_obs_size attributes."""
    env = make(case)
    assert env.obs_size == case.own_obs_size + (case.horizon is not None)
    for name in ("agent_ids", "last_action", "raw_obs_size"):
        assert not hasattr(env, name), f"the env still has {name}"
    obs, *_ = env.reset(seed=8)
    assert obs.shape == (case.n_agents, case.own_obs_size + (case.horizon is not None))


@pytest.mark.parametrize("env_name", [tuple_env.ENV_ID, tuple_env.MASKED_ENV_ID])
def test_tuple_env_obs_is_the_envs_own_observation(env_name):
    """Step by step, obs is exactly the env's own per-agent observation zero-padded to the widest: no agent id block
    and no last action after it (the tuple env has no horizon, so no time feature either)."""
    env = make_env("gym", env_name, seed=0)
    core = env._env.unwrapped
    obs, *_ = env.reset(seed=8)
    for _ in range(env.episode_limit):
        expected = np.zeros((env.n_agents, max(tuple_env.OBS_SIZES)), dtype=np.float32)
        for i, own in enumerate(core._obs()):
            expected[i, : len(own)] = own
        np.testing.assert_array_equal(obs, expected)
        obs, _, _, _, terminated, truncated, _ = env.step(env.sample_actions())
        if terminated or truncated:
            break


def test_the_caller_may_write_into_obs(case):
    """obs from reset() and step() are fresh arrays: a caller that writes into them (a script building its network
    inputs in place) changes neither the state handed out with them nor anything the env gives later."""
    max_steps = compare_steps(case) or case.episode_limit
    clean, written = make(case, seed=15), make(case, seed=15)
    expected = run_episode(clean, random_policy, max_steps=max_steps)
    obs, state, _, _ = written.reset()
    got_obs, got_state = [obs.copy()], [state.copy()]
    obs.fill(-7.0)
    np.testing.assert_array_equal(state, got_state[0])
    for actions, *_ in expected[1]:
        obs, state, *_ = written.step(actions)
        got_obs.append(obs.copy())
        got_state.append(state.copy())
        obs.fill(-7.0)
        np.testing.assert_array_equal(state, got_state[-1])
    np.testing.assert_array_equal(got_obs, [expected[0][0]] + [s[1] for s in expected[1]])
    np.testing.assert_array_equal(got_state, [expected[0][1]] + [s[2] for s in expected[1]])


def test_close_closes_the_env(case, monkeypatch):
    """close() must reach the family's own env (its viewer, processes, files), not stop at the base class."""
    env = make(case)
    closed = []
    monkeypatch.setattr(env._env, "close", lambda: closed.append(True))
    env.close()
    assert closed == [True]


def test_recording_refuses_in_one_line_where_it_cannot_draw(monkeypatch):
    """Setting recording True checks at once that the env can draw and that imageio (the video writer) is there,
    with a one-line EnvError, and leaves recording off; setting it False checks nothing. Where it can draw, recording
    changes nothing in the episodes (drawing uses no random state)."""
    pytest.importorskip("mpe2", reason="needs mpe2: pip install mpe2")
    pytest.importorskip("imageio", reason="needs imageio: pip install 'cleanmarl[video]'")
    cannot_draw = make_env("gym", tuple_env.ENV_ID, seed=0)  # its env has no render()
    cannot_draw.reset()
    with pytest.raises(EnvError) as e:
        cannot_draw.recording = True
    assert_one_line(e, "GymTupleEnv cannot render frames")
    assert cannot_draw.recording is False
    cannot_draw.recording = False
    run_episode(cannot_draw, random_policy)

    recorded, plain = (make_env("pz", "simple_spread_v3", seed=0) for _ in range(2))
    recorded.recording = True
    assert recorded.recording is True
    assert_same_trajectory(run_episode(recorded, random_policy), run_episode(plain, random_policy))
    assert len(recorded.take_frames()) == 26 and recorded.recording is False

    # import now raises ModuleNotFoundError(name="imageio")
    monkeypatch.setitem(sys.modules, "imageio", None)
    without_imageio = make_env("pz", "simple_spread_v3", seed=0)
    without_imageio.recording = False
    with pytest.raises(EnvError) as e:
        without_imageio.recording = True
    assert_one_line(e, "imageio", "pip install 'cleanmarl[video]'")
    assert without_imageio.recording is False


# ---------------------------------------------------------------- family specifics


def test_lbf_real_termination():
    """All food collected -> terminated=True, truncated=False (the field is cleared by a real LOAD)."""
    pytest.importorskip("lbforaging", reason="needs lbforaging: pip install lbforaging")
    env = make_env("lbf", LBF_NAME, seed=0)
    env.reset()
    core = env._env
    core.field[:] = 0
    core.field[3, 3] = 1  # one level-1 food between the two players
    core.players[0].position, core.players[1].position = (3, 2), (3, 4)
    core._gen_valid_moves()
    _, _, _, reward, terminated, truncated, info = env.step(np.array([LBF_LOAD, LBF_LOAD]))
    assert not core.field.any()
    assert terminated is True and truncated is False
    assert reward > 0 and reward == pytest.approx(float(np.sum(info["rewards"])))


def test_lbf_observations_are_scaled_into_minus_one_one_and_raw_on_request():
    """LBF observes grid coordinates and levels (up to 7 on 8x8); make_env divides them by the
    space's upper bounds, and scale_obs=False keeps the raw values."""
    pytest.importorskip("lbforaging", reason="needs lbforaging: pip install lbforaging")
    scaled, raw = (make_env("lbf", LBF_NAME, seed=0, scale_obs=s) for s in (True, False))
    seen = []
    for env in (scaled, raw):
        obs, state, *_ = env.reset()
        rows = [obs]
        for _ in range(20):
            obs, *_ = env.step(np.zeros(env.n_agents, np.int64))
            rows.append(obs)
        seen.append(np.stack(rows))
    assert np.abs(seen[0]).max() <= 1.0 and seen[1].max() > 1.0
    high = scaled._env.observation_space[0].high
    assert np.allclose(seen[0] * np.where(high > 0, high, 1.0), seen[1])


@pytest.mark.parametrize(
    "env_name, kwargs",
    [
        (LBF_NAME, {}),
        ("Foraging-2s-8x8-2p-2f-coop-v3", {}),  # windows cut at the grid's edges
        ("Foraging-2s-5x5-3p-2f-v3", {}),  # players seen past the window, near an edge
        ("Foraging-2s-10x10-3p-3f-v3", {"observe_agent_levels": False}),
        ("Foraging-15x15-4p-4f-v3", {}),
    ],
)
def test_lbf_observations_are_lbforagings_own(env_name, kwargs):
    """The wrapper builds LBF's observations itself (cleanmarl.env.lbf.observations): the same
    numbers as ForagingEnv._make_gym_obs at every step of random episodes."""
    lbforaging = pytest.importorskip(
        "lbforaging", reason="needs lbforaging: pip install lbforaging"
    )
    env = make_env("lbf", env_name, seed=0, scale_obs=False, **kwargs)
    own = lbforaging.foraging.environment.ForagingEnv._make_gym_obs
    rng, checked = np.random.default_rng(0), 0
    for _ in range(8):
        obs, *_, avail_actions, _ = env.reset()
        terminated = truncated = False
        while not (terminated or truncated):
            expected = np.array(own(env._env))
            assert obs.dtype == np.float32 and np.array_equal(obs, expected)
            actions = np.array([rng.choice(np.flatnonzero(a)) for a in avail_actions])
            obs, _, avail_actions, _, terminated, truncated, _ = env.step(actions)
            checked += 1
    assert checked > 200


def test_lbf_longer_time_limit_reaches_the_env():
    """LBF keeps its own 50-step limit: a longer time_limit must move it, not end the episode at 50."""
    pytest.importorskip("lbforaging", reason="needs lbforaging: pip install lbforaging")
    case = CASES[0]
    env = make(case, time_limit=80)
    _, steps = run_episode(env, idle_policy(case), seed=9)
    assert len(steps) == 80 and steps[-1][6] and not steps[-1][5]


class Viewer:
    closed = False

    def close(self):
        self.closed = True


def test_lbf_close_reaches_lbforagings_close():
    """LBF's own close() closes its render window: the wrapper's close() must get that far."""
    pytest.importorskip("lbforaging", reason="needs lbforaging: pip install lbforaging")
    env = make_env("lbf", LBF_NAME, seed=0)
    assert isinstance(env, LBFEnv)
    env._env.viewer = viewer = Viewer()  # what render() leaves behind
    env.close()
    assert viewer.closed


def test_mpe_speaker_listener_masks_and_padding():
    """The speaker (3 actions, 3 obs) never gets actions 3, 4; its obs is zero-padded to the listener's 11."""
    pytest.importorskip("mpe2", reason="needs mpe2: pip install mpe2")
    env = make_env("pz", "simple_speaker_listener_v4", seed=0)
    speaker, listener = env.agents.index("speaker_0"), env.agents.index("listener_0")
    for seed in range(3):
        (obs, _, avail, _), steps = run_episode(env, random_policy, seed=seed)
        all_obs = np.stack([obs] + [s[1] for s in steps])  # [T+1, N, obs_size]
        all_avail = np.stack([avail] + [s[3] for s in steps])  # [T+1, N, A]
        assert not all_avail[:, speaker, 3:].any()
        assert all_avail[:, speaker, :3].all() and all_avail[:, listener].all()
        assert not all_obs[:, speaker, 3:11].any() and all_obs[:, listener, :11].any(axis=1).all()
        assert max(s[0][speaker] for s in steps) <= 2


def test_mpe_success_on_the_last_step_terminates():
    """mpe2 checks max_cycles before terminate_on_success, so it reports a success on the last step as
    truncation; the wrapper must report it as a real end (no bootstrap), and a failure there as truncation."""
    pytest.importorskip("mpe2", reason="needs mpe2: pip install mpe2")
    for covered in (True, False):
        env = make_env("pz", "simple_spread_v3", seed=0, time_limit=1, terminate_on_success=True)
        env.reset(seed=0)
        world = env._env.unwrapped.world
        if covered:  # every agent on its own landmark, at rest; action 0 is the no-op
            for agent, landmark in zip(world.agents, world.landmarks, strict=True):
                agent.state.p_pos, agent.state.p_vel = landmark.state.p_pos.copy(), np.zeros(2)
        *_, terminated, truncated, _ = env.step(np.zeros(env.n_agents, dtype=np.int64))
        assert (terminated, truncated) == (covered, not covered)


@pytest.mark.parametrize("env_name", [tuple_env.ENV_ID, tuple_env.MASKED_ENV_ID])
def test_tuple_env_real_termination(env_name):
    env = make_env("gym", env_name, seed=0)
    for seed in range(5):
        _, steps = run_episode(env, greedy_tuple_policy, seed=seed)
        assert steps[-1][5] is True and steps[-1][6] is False
        assert len(steps) < env.episode_limit and env._env.unwrapped.all_on_goal
        assert sum(s[4] for s in steps) == pytest.approx(
            sum(float(np.sum(s[7]["rewards"])) for s in steps)
        )
        last = steps[-1][7]["rewards"]  # everyone is on the goal: +1 if they arrived now, else 0
        assert set(last.tolist()) <= {0.0, 1.0} and 1.0 in last


@pytest.mark.parametrize("env_name", [tuple_env.ENV_ID, tuple_env.MASKED_ENV_ID])
def test_tuple_env_step_limit_is_truncation(env_name):
    """The env reports its own step limit as terminated=True; the wrapper must turn it into truncation."""
    env = make_env("gym", env_name, seed=0)
    assert env.episode_limit == 20
    _, steps = run_episode(env, stay_policy, seed=0)
    core = env._env.unwrapped
    assert len(steps) == 20 and core.t == core.max_steps and not core.all_on_goal
    assert steps[-1][5] is False and steps[-1][6] is True


def test_tuple_env_pads_actions_and_obs():
    """Agents 0 and 1 have 3 actions and 3 obs features: action 3 is masked and obs column 3 stays 0."""
    env = make_env("gym", tuple_env.ENV_ID, seed=0)
    (obs, _, avail, _), steps = run_episode(env, random_policy, seed=0)
    all_obs = np.stack([obs] + [s[1] for s in steps])  # [T+1, N, obs_size]
    all_avail = np.stack([avail] + [s[3] for s in steps])  # [T+1, N, A]
    assert not all_avail[:, :2, 3].any() and all_avail[:, 2].all()
    assert not all_obs[:, :2, 3].any() and all_obs[:, 2, 3].any()


class DiscreteObsEnv:
    """Two agents observing a Discrete(4) cell index and a Box(2): the wrapper must one-hot the Discrete part."""

    def __init__(self):
        import gymnasium as gym

        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2)
        obs = gym.spaces.Tuple([gym.spaces.Discrete(4), gym.spaces.Box(0.0, 1.0, (2,), np.float32)])
        self.observation_space = gym.spaces.Tuple([obs] * 2)
        self.cells, self.unwrapped, self.spec = [1, 3], self, None

    def _obs(self):
        return tuple((c, np.array([0.5, 0.25], dtype=np.float32)) for c in self.cells)

    def reset(self, seed=None, options=None):
        self.cells = [1, 3]
        return self._obs(), {}

    def step(self, actions):
        self.cells = [2, 0]
        return self._obs(), [0.0, 0.0], True, False, {}


def test_gym_flattens_non_box_observations(monkeypatch):
    """Discrete observations become one-hot (gymnasium's flatten), not the index copied into every slot."""
    import gymnasium as gym

    monkeypatch.setattr(gym, "make", lambda *args, **kwargs: DiscreteObsEnv())
    env = make_env("gym", "DiscreteObs-v0", seed=0, time_limit=5)
    assert env.obs_size == 6  # 4 (one-hot) + 2, nothing appended
    obs, state, _, _ = env.reset()
    np.testing.assert_array_equal(obs, [[0, 1, 0, 0, 0.5, 0.25], [0, 0, 0, 1, 0.5, 0.25]])
    np.testing.assert_array_equal(state, obs.reshape(-1))
    obs, *_ = env.step(np.zeros(2, dtype=np.int64))
    np.testing.assert_array_equal(obs, [[0, 0, 1, 0, 0.5, 0.25], [1, 0, 0, 0, 0.5, 0.25]])


def test_smaclite_3m_sizes_and_battle_won():
    pytest.importorskip("smaclite", reason=f"needs smaclite: {SMACLITE_INSTALL}")
    env = make_env("smaclite", "3m", seed=0)
    # SMAC's sizes (obs 30, state 48), each + 1: the time feature of the 60-step horizon (no agent ids appended)
    assert (env.obs_size, env.state_size, env.n_actions, env.episode_limit, env.horizon) == (
        31,
        49,
        9,
        60,
        60,
    )

    def focus_fire(
        env, obs, avail
    ):  # everyone shoots the first enemy in range, else walks east towards them
        return np.array(
            [6 + np.flatnonzero(a[6:])[0] if a[6:].any() else (4 if a[4] else 0) for a in avail]
        )

    _, steps = run_episode(env, focus_fire, seed=0)
    assert steps[-1][5] is True and steps[-1][6] is False
    assert steps[-1][7]["battle_won"] is True
    assert all(s[7]["battle_won"] is False for s in steps[:-1])


class FakeSMAClite:
    """SMAClite's env interface (smaclite/env/smaclite.py: sizes, reset, step, masks, state, last_actions, close)
    without its simulation, so the wrapper's own SMAClite logic is tested where smaclite is not installed.

    Sizes are 3m's. Like SMAClite it has no time limit (it never terminates here), asserts Python int actions,
    ends its state with the last joint action one-hot, sets last_actions in step() and keeps them across resets.
    """

    def __init__(self, n_agents=3, n_actions=9, obs_size=30, state_size=48):
        self.n_agents, self.n_actions, self.obs_size, self.state_size = (
            n_agents,
            n_actions,
            obs_size,
            state_size,
        )
        self.unwrapped = self
        self.last_actions = np.zeros(n_agents * n_actions)
        self.rng = np.random.default_rng(0)
        self.closed = False

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        return self.get_obs(), {"battle_won": False}

    def step(self, actions):
        assert len(actions) == self.n_agents and all(type(a) is int for a in actions)
        avail = self.get_avail_actions()
        assert all(avail[i][a] for i, a in enumerate(actions)), f"unavailable actions {actions}"
        self.last_actions = np.eye(self.n_actions)[np.array(actions)].flatten()
        return self.get_obs(), 0.0, False, False, {"battle_won": False}

    def get_obs(self):
        return tuple(
            self.rng.uniform(-1, 1, self.obs_size).astype(np.float32) for _ in range(self.n_agents)
        )

    def get_avail_actions(self):
        avail = np.zeros(self.n_actions)
        avail[1:6] = 1  # stop and the four moves; no enemy in range
        return [avail.copy() for _ in range(self.n_agents)]

    def get_state(self):
        state = np.zeros(self.state_size, dtype=np.float32)
        units = self.state_size - self.last_actions.size
        state[:units] = self.rng.uniform(-1, 1, units)
        state[units:] = self.last_actions
        return state

    def close(self):
        self.closed = True


@pytest.fixture
def fake_smaclite(monkeypatch):
    """The real SMACliteEnv over FakeSMAClite: -> the list of FakeSMAClite instances it made."""
    made = []

    class FakeGym:
        registry = {}  # SMAClite's own maps are not registered: only CLASSIC_MAPS are known

        @staticmethod
        def make(env_id, map_info, seed, use_cpp_rvo2, **kwargs):
            assert env_id == "smaclite/custom-v0" and map_info == "map_info 3m"
            made.append(FakeSMAClite())
            return made[-1]

    libraries = {"gymnasium": FakeGym, "smaclite": None}
    monkeypatch.setattr(smaclite_module, "require", lambda module, install: libraries[module])
    monkeypatch.setattr(smaclite_module, "classic_map_info", lambda name: f"map_info {name}")
    return made


def test_smaclite_map_limit_is_the_horizon(fake_smaclite):
    """SMAClite has no limit of its own: SMAC's 60 steps on 3m are the task's horizon (a battle not won by then is
    lost) and end the episode as a termination; a shorter time_limit cuts it as a truncation."""
    for time_limit, limit in ((None, smaclite_module.EPISODE_LIMITS["3m"]), (7, 7)):
        env = make_env("smaclite", "3m", seed=0, time_limit=time_limit)
        assert env.episode_limit == limit and env.horizon == 60
        _, steps = run_episode(env, random_policy, seed=1, max_steps=limit + 5)
        assert len(steps) == limit
        ends = [False] * (limit - 1) + [True]
        assert [s[5] for s in steps] == (ends if time_limit is None else [False] * limit)
        assert [s[6] for s in steps] == ([False] * limit if time_limit is None else ends)
        assert steps[-1][7]["battle_won"] is False
        env.close()
        assert fake_smaclite[-1].closed
    assert smaclite_module.EPISODE_LIMITS["3m"] == 60


def test_smaclite_reset_clears_last_actions(fake_smaclite):
    """SMAClite keeps its last joint action (the end of its state) across resets: reset() must zero it."""
    env = make_env("smaclite", "3m", seed=0)
    n_last = env.n_agents * env.n_actions
    _, steps = run_episode(env, random_policy, seed=1)
    assert steps[-1][2][-n_last:].any() and fake_smaclite[0].last_actions.any()
    _, state, _, _ = env.reset(seed=2)
    np.testing.assert_array_equal(state[-n_last:], np.zeros(n_last))
    assert state[:-n_last].any()


def test_smaclite_laser_beam_hits_nobody_where_smaclite_raises():
    """The guard answers 0 damage for a beam with no unit in reach (SMAClite's own code raises there) and calls
    SMAClite's code, with the same arguments, wherever a unit is in reach. Installed once: a second call is a no-op."""
    calls = []

    class Finder:
        def __init__(self, found):
            self.found = found

        def query_radius(self, units, radius):
            return [self.found for _ in units]

    class LaserBeamTargeter:
        radius = 1.4

        def target(self, origin, target, **kwargs):
            calls.append((origin, target, kwargs))
            return 7.5

    module = type(sys)("targeter")
    module.LaserBeamTargeter = LaserBeamTargeter
    smaclite_module.guard_laser_beam(module)
    guarded = LaserBeamTargeter.target
    smaclite_module.guard_laser_beam(module)
    assert LaserBeamTargeter.target is guarded
    beam = LaserBeamTargeter()
    assert (
        beam.target("colossus", "dead zergling", neighbour_finder=Finder([]), max_radius=1) == 0
        and not calls
    )
    finder = Finder(["zergling"])
    assert beam.target("colossus", "zergling", neighbour_finder=finder, max_radius=1) == 7.5
    assert calls == [("colossus", "zergling", {"neighbour_finder": finder, "max_radius": 1})]
    smaclite_module.guard_laser_beam(
        type(sys)("a SMAClite without the beam")
    )  # nothing to guard, no error
    smaclite_module.guard_laser_beam(None)


def test_so_many_banelings_blast_a_zealot_as_on_sc2_and_smaclites_own_maps_keep_80():
    """The classic so_many_baneling takes SC2's blast against units (16, +19 against light: 35 to a
    zealot's shields); SMAClite's baneling (80, its figure against buildings) stays in its own maps
    and its unit table; spread zealots win the battle with SC2's blast and lose it with SMAClite's."""
    pytest.importorskip("smaclite", reason=f"needs smaclite: {SMACLITE_INSTALL}")
    from smaclite.env.units.unit_type import StandardUnit

    def blast(env_name):  # one enemy baneling's blast on a fresh unit of ours: what it took
        env = make_env("smaclite", env_name, seed=0)
        env.reset()
        sim = env._env
        baneling = next(u for u in sim.enemies.values() if u.type.stats.name == "baneling")
        target = sim.agents[0]
        target.hp = 1000  # to take a whole blast
        before = target.hp + target.shield
        baneling.deal_damage(target)
        return before - target.hp - target.shield

    assert blast("so_many_baneling") == 35
    assert blast("bane_vs_bane") == 80  # a zergling (light): SMAClite's figure
    assert StandardUnit.BANELING.value.damage == 80 and not StandardUnit.BANELING.value.bonuses

    def spread_battle_won():  # the zealots walk apart (north and south) for 3 steps a place, attack
        env = make_env("smaclite", "so_many_baneling", seed=0)
        obs, state, avail, info = env.reset()
        t, done = 0, False
        while not done:
            actions = []
            for i, a in enumerate(avail):
                place, walk, attack = i - 3, 2 if i > 3 else 3, np.flatnonzero(a[6:])
                if not a[1]:
                    actions.append(0)
                elif t < 3 * abs(place) and a[walk]:
                    actions.append(walk)
                else:
                    actions.append(6 + attack[0] if len(attack) else 1)
            obs, state, avail, reward, terminated, truncated, info = env.step(actions)
            t, done = t + 1, terminated or truncated
        return info["battle_won"]

    assert spread_battle_won()
    fixes = dict(smaclite_module.UNIT_FIXES)
    try:
        smaclite_module.UNIT_FIXES.clear()
        assert not spread_battle_won()
    finally:
        smaclite_module.UNIT_FIXES.update(fixes)


def test_smaclite_2c_vs_64zg_plays_past_the_empty_beam():
    """Random play on 2c_vs_64zg (seed 1) fires a colossus beam at a dead zergling with nobody in reach in its 14th
    episode: SMAClite's own code raises there, the wrapper's plays on."""
    pytest.importorskip("smaclite", reason=f"needs smaclite: {SMACLITE_INSTALL}")
    env = make_env("smaclite", "2c_vs_64zg", seed=1)
    from smaclite.env.units.targeters.targeter import LaserBeamTargeter

    guarded, empty = LaserBeamTargeter.target, []

    def counted(self, origin, target, **kwargs):
        empty.append(len(kwargs["neighbour_finder"].query_radius([target], self.radius)[0]) == 0)
        return guarded(self, origin, target, **kwargs)

    try:
        LaserBeamTargeter.target = counted
        for _ in range(14):
            run_episode(env, random_policy, seed=None)
    finally:
        LaserBeamTargeter.target = guarded
    assert any(empty), "no empty beam: the test no longer reaches the case it guards"


# ---------------------------------------------------------------- bad input


def assert_one_line(error, *parts):
    message = str(error.value)
    assert "\n" not in message and message.strip() == message and message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("time_limit", [0, -3])
def test_time_limit_must_be_positive(time_limit):
    with pytest.raises(EnvError) as e:
        make_env("lbf", LBF_NAME, time_limit=time_limit)
    assert_one_line(e, "time_limit", str(time_limit))


def test_unknown_env_type():
    with pytest.raises(EnvError) as e:
        make_env("starcraft", "3m")
    assert_one_line(e, "'starcraft'", *ENV_TYPES)


@pytest.mark.parametrize(
    "env_type, env_name, kwargs, package, parts",
    [
        ("lbf", "Foraging-9x9-nope-v3", {}, "lbforaging", ["'Foraging-9x9-nope-v3'", LBF_NAME]),
        ("lbf", "CartPole-v1", {}, "lbforaging", ["'CartPole-v1'", LBF_NAME]),
        ("pz", "simple_nope_v3", {}, "mpe2", ["'simple_nope_v3'", *MPE_ENVS]),
        (
            "pz",
            "simple_tag_v3",
            {},
            "mpe2",
            ["simple_tag_v3", "adversaries", "team reward", *MPE_ENVS],
        ),
        (
            "pz",
            "simple_adversary_v3",
            {},
            "mpe2",
            ["simple_adversary_v3", "cooperative", *MPE_ENVS],
        ),
        ("pz", "pistonball_v6", {"env_family": "bogus"}, "pettingzoo", ["'bogus'", *PZ_FAMILIES]),
        ("pz", "nope_v1", {"env_family": "sisl"}, "pettingzoo", ["'nope_v1'", "sisl"]),
        ("gym", "NoSuchEnv-v0", {}, "gymnasium", ["'NoSuchEnv-v0'"]),
        ("gym", "CartPole-v1", {}, "gymnasium", ["CartPole-v1", "Tuple"]),
    ],
    ids=[
        "lbf-name",
        "lbf-other-env",
        "mpe-name",
        "mpe-competitive",
        "mpe-adversary",
        "pz-family",
        "pz-name",
        "gym-id",
        "gym-not-tuple",
    ],
)
def test_unknown_name(env_type, env_name, kwargs, package, parts):
    pytest.importorskip(package, reason=f"needs {package}: pip install {package}")
    with pytest.raises(EnvError) as e:
        make_env(env_type, env_name, **kwargs)
    assert_one_line(e, *parts)


def test_unknown_smaclite_map():
    pytest.importorskip("smaclite", reason=f"needs smaclite: {SMACLITE_INSTALL}")
    from cleanmarl.env.smaclite import CLASSIC_MAPS

    with pytest.raises(EnvError) as e:
        make_env("smaclite", "4m")
    assert_one_line(e, "'4m'", *CLASSIC_MAPS, "2s3z", "MMM2", "corridor")


@pytest.mark.parametrize(
    "package, env_type, env_name, parts",
    [
        # SMAClite is not on PyPI: its message also names the families that work without it, with an env each.
        (
            "smaclite",
            "smaclite",
            "3m",
            ["lbf", LBF_NAME, "pz", "simple_spread_v3", "gym", "rware:rware-tiny-2ag-v2"],
        ),
        ("mpe2", "pz", "simple_spread_v3", []),
        ("lbforaging", "lbf", LBF_NAME, []),
    ],
)
def test_missing_package(monkeypatch, package, env_type, env_name, parts):
    monkeypatch.setitem(
        sys.modules, package, None
    )  # import now raises ModuleNotFoundError(name=package)
    with pytest.raises(EnvError) as e:
        make_env(env_type, env_name)
    assert_one_line(e, package, "pip install", *parts)


def test_require_shows_a_broken_install(monkeypatch, tmp_path):
    """A package that is there but misses one of its own dependencies shows the real error, not 'not installed'."""
    (tmp_path / "cleanmarl_broken_pkg.py").write_text("import cleanmarl_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as e:
        require("cleanmarl_broken_pkg", "pip install cleanmarl_broken_pkg")
    assert e.value.name == "cleanmarl_missing_dependency"


def test_gym_missing_module_names_it():
    with pytest.raises(EnvError) as e:
        make_env("gym", "cleanmarl_no_such_module:Foo-v0")
    assert_one_line(e, "pip install cleanmarl_no_such_module")


def test_gym_copies_arrays_the_env_reuses():
    env = make_env("gym", tuple_env.MASKED_ENV_ID, seed=0, reuse_buffers=True)
    run_episode(env, random_policy, seed=0)


@pytest.mark.parametrize(
    "env_name, own_limit, package",
    [("rware:rware-tiny-2ag-v2", 500, "rware"), (tuple_env.ENV_ID, 20, "gymnasium")],
    ids=["rware", "tuple"],
)
def test_gym_time_limit_beyond_the_envs_own_is_refused(env_name, own_limit, package):
    """The env's own step limit ends its episodes first: a longer time_limit is refused, not silently cut."""
    pytest.importorskip(package, reason=f"needs {package}: pip install {package}")
    with pytest.raises(EnvError) as e:
        make_env("gym", env_name, time_limit=own_limit + 1)
    assert_one_line(
        e, f"time_limit {own_limit + 1}", env_name, f"step limit of {own_limit}", f"<= {own_limit}"
    )
    for time_limit in (own_limit, own_limit - 1):
        assert make_env("gym", env_name, time_limit=time_limit).episode_limit == time_limit


# ---------------------------------------------------------------- env_type from the env name


@pytest.mark.parametrize(
    "env_name, env_type",
    [
        ("3m", "smaclite"),
        ("MMM2", "smaclite"),
        ("so_many_baneling", "smaclite"),
        (LBF_NAME, "lbf"),
        ("Foraging-2s-8x8-2p-2f-coop-v3", "lbf"),
        ("Foraging-10x10-3p-3f-v3", "lbf"),
        ("simple_spread_v3", "pz"),
        ("simple_speaker_listener_v4", "pz"),
        ("simple_tag_v3", "pz"),  # competitive: pz refuses it with its own message
        ("rware:rware-tiny-2ag-v2", "gym"),
        ("tests.two_step:TwoStep-v0", "gym"),
        (tuple_env.ENV_ID, "gym"),  # registered when tests.tuple_env was imported
        ("CartPole-v1", "gym"),
    ],
)
def test_resolve_env_type(env_name, env_type):
    assert resolve_env_type(env_name) == env_type


def test_resolve_env_type_from_the_name_alone(monkeypatch):
    """No family library needs to be importable, and gymnasium's registry need not hold the LBF ids."""
    import gymnasium as gym

    monkeypatch.setattr(gym, "registry", {})
    for package in ("smaclite", "lbforaging", "mpe2", "rware"):
        monkeypatch.setitem(sys.modules, package, None)
    assert resolve_env_type("3m") == "smaclite"
    assert resolve_env_type("Foraging-2s-8x8-2p-2f-coop-v3") == "lbf"
    assert resolve_env_type("simple_spread_v3") == "pz"
    assert resolve_env_type("rware:rware-tiny-2ag-v2") == "gym"


def test_resolve_env_type_lbf_ids_registered_by_lbforaging():
    """Importing lbforaging registers its ids in gymnasium: they stay lbf, not lbf and gym at once."""
    pytest.importorskip("lbforaging", reason="needs lbforaging: pip install lbforaging")
    import gymnasium as gym

    assert LBF_NAME in gym.registry
    assert resolve_env_type(LBF_NAME) == "lbf"


@pytest.mark.parametrize("env_name", ["xyz", "NoSuchEnv-v0", "3m_vs_nothing", "Foraging-8x8"])
def test_resolve_env_type_unknown(env_name):
    with pytest.raises(EnvError) as e:
        resolve_env_type(env_name)
    assert_one_line(
        e,
        repr(env_name),
        "--env-type",
        *ENV_TYPES,
        "3m",
        "Foraging-",
        "simple_spread_v3",
        "module:EnvId",
    )


def test_resolve_env_type_ambiguous(monkeypatch):
    """A name two families claim is refused: another library registering an MPE name, or a map named like an id."""
    import gymnasium as gym
    from gymnasium.envs.registration import EnvSpec

    monkeypatch.setitem(
        gym.registry,
        "simple_spread_v3",
        EnvSpec("simple_spread_v3", "tests.tuple_env:TupleChaseEnv"),
    )
    with pytest.raises(EnvError) as e:
        resolve_env_type("simple_spread_v3")
    assert_one_line(e, "'simple_spread_v3'", "(pz, gym)", "--env-type")
    monkeypatch.setitem(smaclite_module.EPISODE_LIMITS, LBF_NAME, 50)
    with pytest.raises(EnvError) as e:
        resolve_env_type(LBF_NAME)
    assert_one_line(e, repr(LBF_NAME), "(smaclite, lbf)", "--env-type")


def test_make_env_resolves_a_missing_env_type():
    pytest.importorskip("lbforaging", reason="needs lbforaging: pip install lbforaging")
    env = make_env(None, LBF_NAME, seed=0)
    assert isinstance(env, LBFEnv) and env.n_agents == 2
    with pytest.raises(EnvError) as e:
        make_env(None, "xyz")
    assert_one_line(e, "'xyz'", "--env-type")


def test_make_env_competitive_mpe_name_gets_pzs_error():
    pytest.importorskip("mpe2", reason="needs mpe2: pip install mpe2")
    for env_name in MPE_COMPETITIVE:
        with pytest.raises(EnvError) as e:
            make_env(None, env_name)
        assert_one_line(e, env_name, "team reward", *MPE_ENVS)


def test_make_env_explicit_env_type_is_not_resolved(monkeypatch):
    """An explicit env_type wins: a name the resolver would refuse (or send elsewhere) is built as asked."""
    import cleanmarl.env

    def refuse(env_name):
        raise AssertionError("make_env resolved an explicit env_type")

    monkeypatch.setattr(cleanmarl.env, "resolve_env_type", refuse)
    env = make_env("gym", "tests.tuple_env:TupleChase-v0", seed=0)
    assert env.n_agents == 3


# ---------------------------------------------------------------- random state: exact resume at episode boundaries


def saved_and_loaded(random_state, path):
    """random_state written with torch.save and read back as a checkpoint is (weights_only: plain Python values)."""
    import torch

    torch.save(random_state, path)
    return torch.load(path, weights_only=True)


def test_random_state_on_a_fresh_env_gives_the_same_episodes(case, tmp_path):
    """random_state taken after some episodes and set on a fresh env of the same make_env call: the next episodes
    are the same on both. Without it, or without the family's own generators ("core"), they differ."""
    max_steps = compare_steps(case)
    env = make(case, seed=11)
    for _ in range(2):
        run_episode(env, random_policy, max_steps=max_steps)
    state = saved_and_loaded(env.random_state, tmp_path / "random_state.pt")
    assert state["pending_seed"] is None and state["core"], (
        "the family's own generators are not found"
    )
    restored, fresh, partial = make(case, seed=11), make(case, seed=11), make(case, seed=11)
    generators = {name: getattr(restored._core(), name) for name in state["core"]}
    restored.random_state = state
    for (
        name,
        generator,
    ) in generators.items():  # set in place: the env's other objects may hold the generator
        assert (
            generator is None or getattr(restored._core(), name) is generator
        )  # (LBF's is None until a reset)
    partial.random_state = {**state, "core": {}}
    for _ in range(3):
        expected = run_episode(env, random_policy, max_steps=max_steps)
        assert_same_trajectory(run_episode(restored, random_policy, max_steps=max_steps), expected)
        assert not trajectories_equal(
            run_episode(fresh, random_policy, max_steps=max_steps), expected
        )
        if (
            case.family != "smaclite"
        ):  # its armies start where they always do: test_smaclite_random_state covers it
            assert not trajectories_equal(
                run_episode(partial, random_policy, max_steps=max_steps), expected
            )


def test_lbf_random_state_carries_where_the_players_stand(tmp_path):
    """LBF's reset() keeps each player off the cells the players stood on when the last episode ended, so an episode's
    start depends on them: random_state carries the positions. On a crowded 5x5 grid with 4 players, each of 30
    episode boundaries handed to a fresh env gives the same next episode; without the positions some differ."""
    pytest.importorskip("lbforaging", reason="needs lbforaging")
    env = make_env("lbf", "Foraging-5x5-4p-1f-coop-v3", seed=3, time_limit=5)
    differed = 0
    for _ in range(30):
        state = saved_and_loaded(env.random_state, tmp_path / "random_state.pt")
        restored, unplaced = (
            make_env("lbf", "Foraging-5x5-4p-1f-coop-v3", seed=3, time_limit=5) for _ in range(2)
        )
        restored.random_state = state
        unplaced.random_state = {**state, "positions": [None] * 4}
        expected = run_episode(env, random_policy)
        assert_same_trajectory(run_episode(restored, random_policy), expected)
        differed += not trajectories_equal(run_episode(unplaced, random_policy), expected)
    assert differed > 0


def test_random_state_before_the_first_reset_keeps_the_seed(case, tmp_path):
    """Taken before any episode, random_state carries make_env's seed: the fresh env's first reset seeds with it,
    and a generator the fresh env has not made yet is made from the saved state."""
    max_steps = compare_steps(case)
    env, restored = make(case, seed=12), make(case, seed=None)
    state = saved_and_loaded(env.random_state, tmp_path / "random_state.pt")
    assert state["pending_seed"] == 12
    restored.random_state = state
    for _ in range(2):
        expected = run_episode(env, random_policy, max_steps=max_steps)
        assert_same_trajectory(run_episode(restored, random_policy, max_steps=max_steps), expected)


def test_random_state_makes_a_generator_the_fresh_env_lacks(case, tmp_path):
    """A generator missing (None) on the fresh env, as on a gymnasium env not seeded yet, is made from the state."""
    max_steps = compare_steps(case)
    env, restored = make(case, seed=14), make(case, seed=14)
    run_episode(env, random_policy, max_steps=max_steps)
    state = saved_and_loaded(env.random_state, tmp_path / "random_state.pt")
    for name in state["core"]:
        setattr(restored._core(), name, None)
    restored.random_state = state
    for _ in range(2):
        expected = run_episode(env, random_policy, max_steps=max_steps)
        assert_same_trajectory(run_episode(restored, random_policy, max_steps=max_steps), expected)


@pytest.mark.parametrize("env_name", ["3m", "2s3z"])
def test_smaclite_random_state(env_name, tmp_path):
    """Whole SMAClite battles with random available actions round-trip too. SMAClite's own generator orders the
    units' attacks in each step (its armies start at fixed positions): on 2s3z some battles differ without it."""
    pytest.importorskip("smaclite", reason=f"needs smaclite: {SMACLITE_INSTALL}")
    env = make_env("smaclite", env_name, seed=13)
    for _ in range(2):
        run_episode(env, random_policy)
    state = saved_and_loaded(env.random_state, tmp_path / "random_state.pt")
    assert list(state["core"]) == ["_np_random"]
    restored, partial = (
        make_env("smaclite", env_name, seed=13),
        make_env("smaclite", env_name, seed=13),
    )
    restored.random_state = state
    partial.random_state = {**state, "core": {}}
    same_without_core = []
    for _ in range(3):
        expected = run_episode(env, random_policy)
        assert_same_trajectory(run_episode(restored, random_policy), expected)
        same_without_core.append(trajectories_equal(run_episode(partial, random_policy), expected))
    if (
        env_name == "2s3z"
    ):  # on 3m the order of the marines' shots happens not to change these battles
        assert not all(same_without_core)
