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


def network(obs_size=EndingEnv.obs_size, n_actions=EndingEnv.n_actions, num_layers=1, seed=0):
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
        rb.add(episode, length)
    before, long_batches = resident_in(arrays), 0
    assert 0 < before < 100 * lstm.EpisodeBuffer.bytes_per_episode(*sizes) / 50  # written steps
    while long_batches < 3:  # batches holding the 500-step episode: 15 others cut to 500 steps
        batch = rb.sample(16, "cpu")
        long_batches += batch["mask"].shape[1] == 500
        assert batch["obs"][:, 10:][~batch["mask"][:, 10:]].abs().sum() == 0  # padding reads 0
    grown = resident_in(arrays) - before
    assert grown < 2**20, f"{grown / 2**20:.0f} MiB committed by reading padding"


@pytest.mark.parametrize("num_layers", [0, 1])
def test_numpy_acting_equals_the_torch_unroll(num_layers):
    q_network = network(num_layers=num_layers)
    inputs = torch.randn(7, 3, q_network.fc.in_features)  # [T, N, D]
    expected = q_network(inputs[None])[0][0].detach()
    torch.testing.assert_close(
        gru_cell_q_values(q_network, inputs).detach(), expected
    )  # nn.GRU is the GRUCell
    forward = lstm.acting_forward(q_network, q_network.fc.in_features)
    hidden, acted = np.zeros((3, 8), np.float32), []
    for x in inputs.numpy():
        q_values, hidden = forward(x, hidden)
        acted.append(q_values)
    np.testing.assert_allclose(np.stack(acted), expected.numpy(), rtol=1e-5, atol=1e-5)
    # On CPU the numpy weights are views: an optimizer step is seen without a refresh
    optimizer = torch.optim.Adam(q_network.parameters(), lr=0.1)
    q_network(inputs[None])[0].sum().backward()
    optimizer.step()
    hidden = np.zeros((3, 8), np.float32)
    q_values, _ = forward(inputs[0].numpy(), hidden)
    np.testing.assert_allclose(
        q_values, q_network(inputs[:1, None])[0][0, 0].detach().numpy(), rtol=1e-5, atol=1e-5
    )


class LSTMNetwork(lstm.QNetwork):
    """A copy that replaces the GRU by an LSTM (and its forward), acting_forward left as it is."""

    def __init__(self, *sizes):
        super().__init__(*sizes)
        self.rnn = nn.LSTM(self.fc.out_features, self.fc.out_features, batch_first=True)

    def forward(self, inputs, hidden=None):
        b, t, n, _ = inputs.shape
        x = F.relu(self.fc(inputs)).transpose(1, 2).reshape(b * n, t, -1)
        out, (hidden, _) = self.rnn(x)
        return self.net(out.view(b, n, t, -1).transpose(1, 2)), hidden.view(b, n, -1)


def tanh_network():
    q_network = network(num_layers=1)
    q_network.net[1] = nn.Tanh()  # a copy that changes an activation after the GRU
    return q_network


@pytest.mark.parametrize(
    "make", [lambda: LSTMNetwork(16, 11, 8, 0), tanh_network], ids=["lstm", "tanh"]
)
def test_acting_refuses_a_network_it_does_not_mirror(make):
    """A copy that changes QNetwork and not acting_forward: one line (at setup, every episode)."""
    q_network = make()
    with pytest.raises(ValueError, match="acting_forward .* is not QNetwork's forward") as error:
        lstm.acting_forward(q_network, q_network.fc.in_features)
    assert "\n" not in str(error.value)


def test_a_copy_with_another_activation_stops_at_setup_in_one_line(tmp_path):
    """A copy of the script whose QNetwork applies tanh where acting applies ReLU: refused."""
    source = SCRIPT.read_text()
    assert source.count("F.relu(self.fc(inputs))") == 1
    copy = tmp_path / "qmix_tanh.py"
    copy.write_text(source.replace("F.relu(self.fc(inputs))", "torch.tanh(self.fc(inputs))"))
    proc = run(tmp_path, *LBF, "--total-timesteps", "10", check=False, script=copy)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("qmix_tanh.py: error: acting_forward (fc, ReLU, GRU, Linear, ReLU)")
    assert not (tmp_path / "runs").exists()  # before the run directory


ENDINGS = [(3, True), (2, False), (1, True), (4, False), (3, False)]  # (length, terminated)


def play(endings, q_network, monkeypatch):
    """Fill a buffer with EndingEnv episodes acted on by q_network (epsilon 0.5); record every step
    of acting_forward's forward: (inputs, hidden given, q_values, hidden returned), per episode."""
    env, calls = EndingEnv(endings), []
    sizes = (
        max(length for length, _ in endings),
        env.n_agents,
        env.obs_size,
        env.state_size,
        env.n_actions,
    )
    rb = lstm.EpisodeBuffer(len(endings), *sizes, seed=0)
    acting_forward = lstm.acting_forward

    def recorded(q_network, obs_size=None):
        forward = acting_forward(q_network, obs_size)

        def step(inputs, hidden):
            q_values, next_hidden = forward(inputs, hidden)
            calls[-1].append((inputs.copy(), hidden.copy(), q_values, next_hidden))
            return q_values, next_hidden

        return step

    monkeypatch.setattr(lstm, "acting_forward", recorded)
    rng = np.random.default_rng(0)
    for _ in endings:
        calls.append([])
        episode = {
            k: np.zeros(shape, dtype) for k, (shape, dtype) in qmix.episode_fields(*sizes).items()
        }
        _, length, _ = lstm.run_episode(env, q_network, 0.5, rng, episode)
        rb.add(episode, length)
    return rb, calls


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
    forward = lstm.acting_forward(q_network, EndingEnv.obs_size)  # before play() records its calls
    rb, calls = play(ENDINGS, q_network, monkeypatch)
    batch = rb.sample(len(ENDINGS), "cpu")
    inputs = lstm.sequence_inputs(batch)
    q_values = lstm.unroll(q_network, inputs).detach().numpy()  # [B, T + 1, N, A]
    for b in range(len(ENDINGS)):
        episode = int(batch["reward"][b, 0]) // 10  # EndingEnv pays t + 10 * episode
        length = int(batch["mask"][b].sum())
        acted = np.stack([q for _, _, q, _ in calls[episode]])
        np.testing.assert_allclose(q_values[b, :length], acted, rtol=1e-5, atol=1e-5)
        final_inputs = inputs[b, length].numpy()
        np.testing.assert_array_equal(
            final_inputs[:, : EndingEnv.obs_size], batch["next_obs"][b, length - 1]
        )
        final_q, _ = forward(final_inputs, calls[episode][-1][3])
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
    mixer = qmix.QMixer(n, state_size, embed_dim=8, hyper_dim=8, hypernet_layers=1)
    with torch.no_grad():
        inputs = lstm.sequence_inputs(batch)
        q_values = lstm.unroll(online, inputs)
        target_next_q = target(inputs)[0][:, 1:]
        td_target, _ = lstm.compute_td_target(batch, target_next_q, mixer, gamma, q_values[:, 1:])

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
