"""cleanmarl/qmix_lstm.py: the GRU agent and its hidden state, acting and training on the same unroll, online and target
unrolls aligned, TBPTT, TD(lambda) on the unroll, and a task only memory solves."""

import importlib
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cleanmarl import qmix
from tests.test_smoke import LBF, ROOT, run, scalars
from tests.test_variants import EndingEnv

lstm = importlib.import_module("cleanmarl.qmix_lstm")
SCRIPT = ROOT / "cleanmarl" / "qmix_lstm.py"
MEMORY = ["--env-name", "tests.memory_cue:MemoryCue-v0"]
ARGS = lstm.Args()  # --agent-ids and --last-action: the script appends both to each observation


def network(obs_size=EndingEnv.input_size, n_actions=EndingEnv.n_actions, num_layers=1, seed=0):
    torch.manual_seed(seed)
    return lstm.QNetwork(obs_size, n_actions, hidden_dim=8, num_layers=num_layers)


def gru_cell_q_values(q_network, inputs):
    """The agent network written as a loop over nn.GRUCell with the same weights: [T, N, D] -> [T, N, A]."""
    cell = nn.GRUCell(q_network.rnn.input_size, q_network.rnn.hidden_size)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(q_network.rnn, name + "_l0"))
    hidden, q_values = torch.zeros(inputs.shape[1], cell.hidden_size), []
    for x in inputs:
        hidden = cell(F.relu(q_network.fc(x)), hidden)
        q_values.append(q_network.net(hidden))
    return torch.stack(q_values)


def resident_in(arrays):
    """Resident bytes of the memory mappings holding arrays (/proc/self/smaps): the buffer's own,
    not what malloc keeps of the batches freed meanwhile."""
    spans, total, inside = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays], 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first:  # a mapping's header: start-end perms ...
            start, end = (int(x, 16) for x in first.split("-"))
            inside = any(start < b and a < end for a, b in spans)
        elif first == "Rss:" and inside:
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps (Linux)")
def test_sampling_the_padding_commits_no_memory():
    """A batch is cut to its longest episode, so it reads the padding of the shorter ones: reading a
    page never written must not commit it, or every slot grows to the longest episode sampled with
    it (on SMAClite MMM2 the buffer held ~13 GB at 150k steps, about 4 times what its steps fill)."""
    sizes = (1000, 4, 256, 512, 8)  # episode_limit, n_agents, obs_size, state_size, n_actions
    rb = lstm.EpisodeBuffer(100, *sizes, seed=0)
    arrays = [*rb.fields.values(), rb.mask]
    episode = {k: np.ones_like(v[0]) for k, v in rb.fields.items()}
    for length in [500] + [10] * 99:
        rb.add({k: v[:length] for k, v in episode.items()})
    before, long_batches = resident_in(arrays), 0
    assert 0 < before < sum(a.nbytes for a in arrays) / 50  # written steps
    for _ in range(40):  # batches holding the 500-step episode (~6): 15 others cut to 500 steps
        batch = rb.sample(16, "cpu")
        long_batches += batch["mask"].shape[1] == 500
        assert batch["obs"][:, 10:][~batch["mask"][:, 10:]].abs().sum() == 0  # padding reads 0
    assert long_batches >= 3  # a bounded loop: a buffer that lost the episode fails, not hangs
    grown = resident_in(arrays) - before
    assert grown < 2**20, f"{grown / 2**20:.0f} MiB committed by reading padding"


@pytest.mark.parametrize("num_layers", [0, 1])
def test_acting_step_by_step_equals_the_unroll(num_layers):
    """Acting calls QNetwork one step at a time, its hidden state carried: the Q-values of the
    unroll over the whole sequence, which is the written-out GRU cell loop."""
    q_network = network(num_layers=num_layers)
    inputs = torch.randn(7, 3, q_network.fc.in_features)  # [T, N, D]
    with torch.no_grad():
        expected = q_network(inputs[None])[0][0]
        torch.testing.assert_close(gru_cell_q_values(q_network, inputs), expected)
        hidden, acted = None, []
        for x in inputs:
            q_values, hidden = q_network(x[None, None], hidden)
            acted.append(q_values[0, 0])
    torch.testing.assert_close(torch.stack(acted), expected)


def test_a_copy_with_another_activation_runs(tmp_path):
    """A copy of the script whose QNetwork applies tanh after its first layer: one change, it runs
    and acts with that network (nothing to mirror)."""
    source = SCRIPT.read_text()
    assert source.count("F.relu(self.fc(inputs))") == 1
    copy = tmp_path / "qmix_tanh.py"
    copy.write_text(source.replace("F.relu(self.fc(inputs))", "torch.tanh(self.fc(inputs))"))
    run(tmp_path, *LBF, "--total-timesteps", "200", "--batch-size", "4", script=copy)


ENDINGS = [(3, True), (2, False), (1, True), (4, False), (3, False)]  # (length, terminated)


def play(endings, q_network, monkeypatch):
    """Fill a buffer with EndingEnv episodes acted on by q_network (epsilon 0.5); record every
    acting step: (inputs, hidden given, q_values, hidden returned), per episode."""
    env, calls = EndingEnv(endings), []
    limit = max(length for length, _ in endings)
    sizes = (limit, env.n_agents, env.input_size, env.state_size, env.n_actions)
    rb = lstm.EpisodeBuffer(len(endings), *sizes, seed=0)

    def record(module, args, output):  # one acting step: [1, 1, N, D], hidden [1, N, H] or None
        inputs, hidden = args[0][0, 0], args[1]
        hidden = torch.zeros_like(output[1][0]) if hidden is None else hidden[0]
        step = (inputs, hidden, output[0][0, 0], output[1][0])
        calls[-1].append(tuple(x.detach().numpy().copy() for x in step))

    q_network.register_forward_hook(record)
    rng = np.random.default_rng(0)
    for _ in endings:
        calls.append([])
        episode, _, _ = lstm.run_episode(env, q_network, ARGS, 0.5, rng)
        rb.add(episode)
    return rb, calls


@pytest.mark.parametrize("appended", [True, False], ids=["ids_last_action", "obs_alone"])
def test_run_episode_returns_its_steps_stacked_with_the_inputs_the_network_saw(appended):
    """run_episode -> qmix.py's episode (each field of episode_fields, [T, ...] in its dtype), its return and info.
    obs[t] is the env's observation followed, with --agent-ids and --last-action, by the one-hot agent id and the
    previous actions one-hot (zeros at t = 0); next_obs[t] is obs[t + 1], the final observation included."""
    args = lstm.Args(agent_ids=appended, last_action=appended)
    env, rng = EndingEnv([(4, False), (3, True)]), np.random.default_rng(0)
    q_network = network(EndingEnv.input_size if appended else EndingEnv.obs_size)
    for e, (length, ends_terminated) in enumerate([(4, False), (3, True)]):
        episode, ep_return, info = lstm.run_episode(env, q_network, args, 0.5, rng)
        input_size = q_network.fc.in_features
        fields = lstm.episode_fields(length, EndingEnv.n_agents, input_size, 4, EndingEnv.n_actions)
        assert sorted(episode) == sorted(fields) and info == {}
        for key, (shape, dtype) in fields.items():
            assert episode[key].shape == shape and episode[key].dtype == dtype, key
        observed = [EndingEnv.observe(e, t) for t in range(length + 1)]
        inputs = np.stack([obs for obs, _, _ in observed])  # [T + 1, N, O]
        if appended:
            ids = np.broadcast_to(np.eye(EndingEnv.n_agents), (length + 1, EndingEnv.n_agents, 2))
            last = np.eye(EndingEnv.n_actions)[episode["actions"]]
            last = np.concatenate([np.zeros_like(last[:1]), last])  # no action before t = 0
            inputs = np.concatenate([inputs, ids, last], -1)
        np.testing.assert_array_equal(episode["obs"], inputs[:-1])
        np.testing.assert_array_equal(episode["next_obs"], inputs[1:])
        states = np.stack([state for _, state, _ in observed])
        np.testing.assert_array_equal(episode["state"], states[:-1])
        np.testing.assert_array_equal(episode["next_state"], states[1:])
        avail = np.stack([avail for _, _, avail in observed])  # [T + 1, N, A]
        np.testing.assert_array_equal(episode["next_avail_actions"], avail[1:])
        assert np.take_along_axis(avail[:-1], episode["actions"][..., None], -1).all()
        np.testing.assert_array_equal(episode["reward"], np.arange(1, length + 1) + 10 * e)
        assert ep_return == sum(range(1, length + 1)) + 10 * e * length
        np.testing.assert_array_equal(episode["terminated"][:-1], 0)
        assert episode["terminated"][-1] == ends_terminated


def test_acting_resets_the_hidden_state_at_every_episode_start_and_carries_it_between_steps(
    monkeypatch,
):
    q_network = network()
    _, calls = play(ENDINGS, q_network, monkeypatch)
    for (length, _), episode in zip(ENDINGS, calls, strict=True):
        assert len(episode) == length
        assert not episode[0][1].any()  # zeros: no memory at an episode's first step
        for (_, hidden, _, _), (_, _, _, previous_hidden) in zip(
            episode[1:], episode, strict=False
        ):
            np.testing.assert_array_equal(hidden, previous_hidden)  # carried from the step before
            assert hidden.any()


def test_training_unroll_reproduces_the_q_values_acted_on(monkeypatch):
    """Every sampled episode is unrolled from a zero hidden state over the inputs it was acted on with: the training
    Q-values of each real step are the acting ones, whatever the other episodes of the batch; at t = T (the input of
    the last step's target) the unroll continues over the final observation."""
    q_network = network()
    rb, calls = play(ENDINGS, q_network, monkeypatch)
    q_network._forward_hooks.clear()  # acting is recorded; the unroll below is not
    batch = rb.sample(len(ENDINGS), "cpu")
    inputs = lstm.sequence_inputs(batch)
    q_values = lstm.unroll(q_network, inputs).detach().numpy()  # [B, T + 1, N, A]
    for b in range(len(ENDINGS)):
        episode = int(batch["reward"][b, 0]) // 10  # EndingEnv pays t + 10 * episode
        length = int(batch["mask"][b].sum())
        acted = np.stack([q for _, _, q, _ in calls[episode]])
        np.testing.assert_allclose(q_values[b, :length], acted, rtol=1e-5, atol=1e-5)
        final_inputs = inputs[b, length].numpy()  # the final obs, the ids, the last actions
        final_obs = EndingEnv.observe(episode, length)[0]
        last_actions = np.eye(EndingEnv.n_actions)[batch["actions"][b, length - 1]]
        expected = np.concatenate([final_obs, np.eye(EndingEnv.n_agents), last_actions], 1)
        np.testing.assert_array_equal(final_inputs, expected)
        with torch.no_grad():
            hidden = torch.from_numpy(calls[episode][-1][3])[None]
            final_q = q_network(torch.from_numpy(final_inputs)[None, None], hidden)[0][0, 0]
        np.testing.assert_allclose(q_values[b, length], final_q, rtol=1e-5, atol=1e-5)


def test_td_targets_read_the_target_unroll_at_t_plus_1_on_truncated_and_terminated_episodes():
    """Hand-built episodes of 3 steps, one truncated and one terminated, and one of 2 steps padded to 3: the targets of
    the script's unroll equal a loop over each episode written here (nn.GRUCell, both networks from zeros at o_0,
    double Q, argmax over available actions), and differ from a target network restarted at o_1 (CleanMARL's)."""
    n, n_actions, obs_size, state_size, gamma = 2, 4, 3, 5, 0.9
    torch.manual_seed(3)
    shapes = dict(
        obs=(n, obs_size), next_obs=(n, obs_size), state=(state_size,), next_state=(state_size,)
    )
    batch = {k: torch.randn(3, 3, *shape) for k, shape in shapes.items()}
    batch["next_obs"][:, :2] = batch["obs"][:, 1:]  # within an episode, next_obs[t] is obs[t + 1]
    batch["next_state"][:, :2] = batch["state"][:, 1:]
    batch["actions"] = torch.randint(0, n_actions, (3, 3, n))
    batch["reward"] = torch.randn(3, 3)
    batch["terminated"] = torch.tensor(
        [[0.0, 0, 0], [0, 0, 1], [0, 1, 0]]
    )  # truncated, terminated, terminated at 2
    batch["next_avail_actions"] = torch.rand(3, 3, n, n_actions) < 0.5
    batch["next_avail_actions"][..., 0] = True
    batch["mask"] = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    online, target = network(obs_size, n_actions, seed=1), network(obs_size, n_actions, seed=2)
    mixer = qmix.QMixer(n, state_size, embed_dim=8)
    with torch.no_grad():
        inputs = lstm.sequence_inputs(batch)
        q_values = lstm.unroll(online, inputs)
        target_next_q = target(inputs)[0][:, 1:]
        td_target = lstm.compute_td_target(batch, target_next_q, mixer, gamma, q_values[:, 1:])

        for b, length in enumerate((3, 3, 2)):
            observations = [batch["obs"][b, 0]] + [
                batch["next_obs"][b, t] for t in range(length)
            ]  # o_0 .. o_L
            seq = torch.stack(observations)
            online_q, target_q = gru_cell_q_values(online, seq), gru_cell_q_values(target, seq)
            restarted_q = gru_cell_q_values(
                target, seq[1:]
            )  # a target GRU unrolled from zeros at o_1
            for t in range(length):
                next_avail = batch["next_avail_actions"][b, t]
                chosen = (
                    online_q[t + 1].masked_fill(~next_avail, -math.inf).argmax(-1, keepdim=True)
                )
                bootstrap = mixer(
                    target_q[t + 1].gather(-1, chosen).squeeze(-1), batch["next_state"][b, t]
                )
                expected = (
                    batch["reward"][b, t] + gamma * (1 - batch["terminated"][b, t]) * bootstrap
                )
                torch.testing.assert_close(td_target[b, t], expected)
                misaligned = mixer(
                    restarted_q[t].gather(-1, chosen).squeeze(-1), batch["next_state"][b, t]
                )
                if not batch["terminated"][b, t]:
                    assert not torch.isclose(bootstrap, misaligned)
            if batch["terminated"][b, length - 1]:
                assert (
                    td_target[b, length - 1] == batch["reward"][b, length - 1]
                )  # no bootstrap past the end
    assert (
        td_target[0, 2] != batch["reward"][0, 2]
    )  # truncated: bootstraps from the final observation


def loss_and_grads(q_network, batch, tbptt):
    """The script's online side of the update (targets fixed): masked MSE and the agent network's gradients."""
    q_network.zero_grad()
    inputs = lstm.sequence_inputs(batch)
    q_values = lstm.unroll(q_network, inputs, tbptt)
    q_taken = q_values[:, :-1].gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    target = torch.linspace(-1, 1, q_taken[..., 0].numel()).view(q_taken.shape[:2])
    loss = F.mse_loss(q_taken.sum(-1)[batch["mask"]], target[batch["mask"]])
    loss.backward()
    return loss.item(), [p.grad.clone() for p in q_network.parameters()]


def test_tbptt_of_at_least_the_episode_length_is_the_full_unroll(monkeypatch):
    q_network = network()
    rb, _ = play(ENDINGS, q_network, monkeypatch)
    batch = rb.sample(len(ENDINGS), "cpu")
    t = batch["mask"].shape[1]
    full_loss, full_grads = loss_and_grads(q_network, batch, 0)
    for tbptt in (t, t + 1, 100):
        loss, grads = loss_and_grads(q_network, batch, tbptt)
        assert loss == pytest.approx(full_loss, rel=1e-6)
        for g, full in zip(grads, full_grads, strict=True):
            torch.testing.assert_close(g, full)
    loss, grads = loss_and_grads(
        q_network, batch, 2
    )  # the same values, gradients cut every 2 steps
    assert loss == pytest.approx(full_loss, rel=1e-6)
    assert not torch.allclose(grads[2], full_grads[2])  # the GRU's input weights


def eval_returns(tmp_path, script, *args):
    run(tmp_path, *args, script=script)
    return [v for _, v in scalars(tmp_path, "eval/ep_reward")]


def test_memory_task_recurrent_agents_reach_the_optimum_feed_forward_ones_stay_at_chance(tmp_path):
    """MemoryCue-v0: the cue is seen at t = 0 only and must be repeated 3 steps later (optimum 1.0, chance 0.5).
    qmix.py's agents see their observation alone here (--no-last-action): a last action could carry the cue."""
    args = [
        *MEMORY,
        "--total-timesteps",
        "4000",
        "--target-network-update-freq",
        "20",
        "--eval-steps",
        "20",
    ]
    args += ["--num-eval-ep", "20", "--seed", "2"]
    (tmp_path / "lstm").mkdir(), (tmp_path / "ff").mkdir()
    recurrent = eval_returns(tmp_path / "lstm", SCRIPT, *args)
    feed_forward = eval_returns(
        tmp_path / "ff", ROOT / "cleanmarl" / "qmix.py", *args, "--no-last-action"
    )
    assert min(recurrent[-5:]) == 1.0, recurrent
    assert np.mean(feed_forward[len(feed_forward) // 2 :]) < 0.65, feed_forward


def losses(tmp_path, seed, *flags):
    args = [
        "--total-timesteps",
        "1500",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--eval-steps",
        "10",
        *flags,
    ]
    run(tmp_path, *LBF, *args, "--seed", str(seed), script=SCRIPT)
    return scalars(tmp_path, "train/loss"), scalars(tmp_path, "eval/ep_length")


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    for name in "abc":
        (tmp_path / name).mkdir()
    flags = ["--tbptt", "4", "--td-lambda", "0.6"]
    loss_a, eval_a = losses(tmp_path / "a", 1, *flags)
    loss_b, eval_b = losses(tmp_path / "b", 1, *flags)
    loss_c, _ = losses(tmp_path / "c", 2, *flags)
    assert len(loss_a) > 5 and all(math.isfinite(v) for _, v in loss_a)
    assert loss_a == loss_b and eval_a == eval_b
    assert loss_a != loss_c


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tbptt", "-1"], "--tbptt must be >= 0"),
        (["--td-lambda", "1.5"], "--td-lambda must be in [0, 1]"),
    ],
)
def test_bad_flags_give_one_error_line(tmp_path, args, message):
    proc = run(tmp_path, *LBF, *args, "--total-timesteps", "10", check=False, script=SCRIPT)
    lines = proc.stderr.strip().splitlines()
    assert (
        proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("qmix_lstm.py: error:")
    ), proc.stderr
    assert message in lines[0]


def test_a_checkpoint_carries_last_action(tmp_path):
    run(
        tmp_path,
        *LBF,
        "--no-last-action",
        "--save-model",
        "--total-timesteps",
        "200",
        "--eval-steps",
        "2",
        script=SCRIPT,
    )
    (model,) = (tmp_path / "runs").glob("*/*.cleanmarl_model")
    proc = run(
        tmp_path, "--eval-only", "--load-model", str(model), "--num-eval-ep", "2", script=SCRIPT
    )
    assert proc.stdout.startswith("eval over 2 episodes")
    proc = run(
        tmp_path,
        "--eval-only",
        "--load-model",
        str(model),
        "--last-action",
        check=False,
        script=SCRIPT,
    )
    assert (
        proc.returncode == 1
        and proc.stderr.strip()
        == "qmix_lstm.py: error: --load-model was trained with --no-last-action"
    )
