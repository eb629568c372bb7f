"""Pixels: hand-built 84x84 frames through the learning signals, the frame stack and the replay
buffer; the Atari protocols' settings; real ALE frames; the convolutional encoders.

The hand-built ``GameEnv`` makes every value known. Lane ``l``'s frame at vector step (= buffer
row) ``j`` is filled with ``j * 10 + l + 1`` (never 0, so zero padding is visible). A game has 3
lives, one lost every 2 steps: rows ``0 .. 5`` of a game are its 6 steps, life losses after the
2nd and 4th step, game over after the 6th; the next row is gymnasium's auto-reset row (the final
frame) and the row after it starts the next game. Step ``t`` of a game pays ``[0, 3, -2][t % 3]``
(a game's score: 2; clipped: 0).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl_lightning.data import ReplayBuffer, VectorCollector
from rl_lightning.envs import LearningSignals, StackLayout, find_stack, make_vector_env
from rl_lightning.envs.atari import PROTOCOLS, DropChannel, FireOnReset
from rl_lightning.envs.wrappers import StackObservations
from rl_lightning.greedy import play_greedy
from rl_lightning.networks.conv import ConvEncoder, image_layout

SCORES = (0.0, 3.0, -2.0)  # step t of a game pays SCORES[t % 3]


class GameEnv(gym.Env):
    """Frames ``calls * 10 + lane + 1``; 3 lives, one lost every 2 steps; game over at 6."""

    def __init__(self, lane: int) -> None:
        self.lane = lane
        self.observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.calls, self.t = -1, 0

    def _frame(self) -> np.ndarray:
        return np.full((84, 84), self.calls * 10 + self.lane + 1, dtype=np.uint8)

    def _lives(self) -> int:
        return 3 - self.t // 2

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.calls, self.t = self.calls + 1, 0
        return self._frame(), {"lives": self._lives()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.calls, self.t = self.calls + 1, self.t + 1
        return self._frame(), SCORES[self.t % 3], self.t == 6, False, {"lives": self._lives()}


def game_env(lanes: int = 1, **signals: bool) -> gym.vector.VectorEnv:
    env = gym.vector.SyncVectorEnv(
        [partial(GameEnv, lane) for lane in range(lanes)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    options = {"clip_rewards": True, "life_loss_terminal": True, **signals}
    return LearningSignals(env, **options)


def collect_game(
    rows: int, capacity_rows: int, lanes: int = 1, **signals: bool
) -> tuple[ReplayBuffer, VectorCollector, dict[int, np.ndarray]]:
    layout = StackLayout(frames=4)
    env = StackObservations(game_env(lanes, **signals), layout=layout)
    buffer = ReplayBuffer(
        capacity=capacity_rows * lanes,
        num_envs=lanes,
        obs_shape=(84, 84),
        obs_dtype=np.uint8,
        stack=layout,
    )
    seen: dict[int, np.ndarray] = {}

    def policy(obs: np.ndarray, env_step: int) -> np.ndarray:
        seen[buffer.rows_written] = obs.copy()
        return np.zeros(obs.shape[0], dtype=np.int64)

    collector = VectorCollector(env, policy, buffer, seed=0)
    collector.collect(rows)
    return buffer, collector, seen


def stack_values(buffer: ReplayBuffer, row: int, lane: int = 0) -> list[int]:
    """The value of each frame (one pixel) in the stack rebuilt for ``row``."""
    flat = np.array([(row % buffer.rows) * buffer.num_envs + lane])
    stack = buffer.observations_at(flat)[0]
    assert stack.shape == (4, 84, 84) and stack.dtype == np.uint8
    assert (stack == stack[:, :1, :1]).all()  # every pixel of a frame holds its value
    return stack[:, 0, 0].tolist()


# -- learning signals: the buffer learns clipped, life-loss episodes; reports stay whole games --
def test_the_buffer_stores_one_uint8_frame_per_row_with_clipped_rewards_and_life_losses() -> None:
    buffer, collector, _ = collect_game(rows=15, capacity_rows=32)
    assert buffer.obs.shape == (32, 1, 84, 84) and buffer.obs.dtype == np.uint8
    np.testing.assert_array_equal(buffer.obs[:15, 0, 0, 0], np.arange(15) * 10 + 1)
    # rows 0-5 game 1, row 6 its final frame (auto-reset row), rows 7-12 game 2, row 13 ...
    np.testing.assert_array_equal(buffer.rewards[:8, 0], [1, -1, 0, 1, -1, 0, 0, 1])
    np.testing.assert_array_equal(buffer.terminated[:14, 0], [0, 1, 0, 1, 0, 1, 0] * 2)
    np.testing.assert_array_equal(buffer.reset_step[:14, 0], [0] * 6 + [1] + [0] * 6 + [1])
    # the reported episodes are the games, with their unclipped score
    returns, lengths = collector.pop_finished_episodes()
    assert returns == [2.0, 2.0] and lengths == [6, 6]
    assert collector.episodes == 2 and collector.env_steps == 13


def test_without_the_signals_the_buffer_stores_the_game_as_it_is() -> None:
    buffer, _, _ = collect_game(
        rows=8, capacity_rows=32, clip_rewards=False, life_loss_terminal=False
    )
    np.testing.assert_array_equal(buffer.rewards[:8, 0], [3, -2, 0, 3, -2, 0, 0, 3])
    np.testing.assert_array_equal(buffer.terminated[:8, 0], [0, 0, 0, 0, 0, 1, 0, 0])


def test_frame_stacks_start_with_each_game_and_go_on_across_a_lost_life() -> None:
    buffer, _, seen = collect_game(rows=15, capacity_rows=32)
    expected = {
        0: [0, 0, 0, 1],  # zero padding before a game's first frame
        1: [0, 0, 1, 11],
        2: [0, 1, 11, 21],  # a life was lost after row 1: the stack goes on (the game did)
        3: [1, 11, 21, 31],
        6: [31, 41, 51, 61],  # the final frame's stack: what a bootstrap would see
        7: [0, 0, 0, 71],  # a new game
        9: [0, 71, 81, 91],
    }
    for row, values in expected.items():
        assert stack_values(buffer, row) == values, row
        assert seen[row][0, :, 0, 0].tolist() == values, row  # what the agent acted on


def test_n_step_windows_stop_at_a_lost_life_and_at_game_over() -> None:
    buffer, _, _ = collect_game(rows=15, capacity_rows=32)
    batch = buffer.gather(np.array([0, 2, 4, 5, 7]), np.zeros(5, dtype=np.int64), n_step=3)
    np.testing.assert_array_equal(batch.n_steps, [2, 2, 2, 1, 2])
    np.testing.assert_array_equal(batch.terminated, [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(
        batch.rewards, [[1, -1, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 0], [1, -1, 0]]
    )
    # bootstrap rows 2, 4, 6, 6, 9: stacks across the life losses, the final frame at row 6
    assert batch.next_obs.shape == (5, 4, 84, 84)
    np.testing.assert_array_equal(
        batch.next_obs[:, :, 0, 0],
        [[0, 1, 11, 21], [11, 21, 31, 41], [31, 41, 51, 61], [31, 41, 51, 61], [0, 71, 81, 91]],
    )
    one = buffer.gather(np.array([1]), np.array([0]), n_step=1)  # the one-step path
    np.testing.assert_array_equal(one.terminated, [1])
    np.testing.assert_array_equal(one.rewards, [[-1]])


def test_rebuilt_frame_stacks_equal_the_acting_stacks_across_the_ring() -> None:
    """Two lanes, a ring of 9 rows, 25 rows written (wrapped twice): every stored row's stack,
    and the bootstrap stacks of its 3-step windows, equal what the agent acted on (rows within 3
    of the oldest stored row are cut there by design: tests/unit/test_frame_stack.py)."""
    buffer, _, seen = collect_game(rows=25, capacity_rows=9, lanes=2)
    assert buffer.oldest_row == 16
    rows = np.arange(buffer.oldest_row + 3, buffer.rows_written)
    for row in rows:
        flat = (row % buffer.rows) * 2 + np.arange(2)
        np.testing.assert_array_equal(buffer.observations_at(flat), seen[row], err_msg=row)
    starts = np.repeat(rows[:-3], 2)
    lanes = np.tile(np.arange(2), len(rows) - 3)
    batch = buffer.gather(starts, lanes, n_step=3)
    boot = starts + batch.n_steps
    expected = np.stack([seen[r][lane] for r, lane in zip(boot, lanes, strict=True)])
    np.testing.assert_array_equal(batch.next_obs, expected)


class ConstantQ(torch.nn.Module):
    """Q(s, .) = (1, 0): always action 0."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q.expand(obs.shape[0], 2)


def test_evaluation_reports_whole_games_with_unclipped_scores() -> None:
    env = StackObservations(game_env(lanes=2), layout=StackLayout(frames=4))
    result = play_greedy(ConstantQ(), env, episodes=3, seed=0)
    np.testing.assert_array_equal(result.returns, [2.0, 2.0, 2.0])


def test_life_loss_terminals_need_an_env_with_lives() -> None:
    env = LearningSignals(
        gym.make_vec("CartPole-v1", num_envs=1), clip_rewards=False, life_loss_terminal=True
    )
    with pytest.raises(ValueError, match="info\\['lives'\\]"):
        env.reset(seed=0)


# -- the protocols --------------------------------------------------------------------------------
def breakout(protocol: str = "nature", lanes: int = 1, **options: Any) -> gym.vector.VectorEnv:
    return make_vector_env(
        id="ALE/Breakout-v5",
        suite="atari",
        game="Breakout",
        protocol=protocol,
        num_envs=lanes,
        **options,
    )


def test_the_protocols_set_the_documented_ale_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import ale_py.vector_env

    made: list[dict[str, Any]] = []
    real = ale_py.vector_env.AtariVectorEnv

    def spy(**kwargs: Any) -> Any:
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(ale_py.vector_env, "AtariVectorEnv", spy)
    shared = {
        "frameskip": 4,
        "maxpool": True,
        "img_height": 84,
        "img_width": 84,
        "grayscale": True,
        "stack_num": 1,
        "max_num_frames_per_episode": 108_000,
        "full_action_space": False,
        "reward_clipping": False,  # the learner's clipping is ours, the env reports scores
        "episodic_life": False,
        "life_loss_info": False,
    }
    for protocol, own in [
        ("nature", {"repeat_action_probability": 0.0, "noop_max": 30, "use_fire_reset": True}),
        ("v5", {"repeat_action_probability": 0.25, "noop_max": 0, "use_fire_reset": False}),
    ]:
        env = make_vector_env(
            id="ALE/Pong-v5", suite="atari", game="Pong", protocol=protocol, num_envs=1
        )
        assert made[-1]["game"] == "pong"
        assert made[-1] | shared == made[-1] and made[-1] | own == made[-1], protocol
        signals = env
        assert isinstance(signals, LearningSignals)
        assert signals.clip_rewards is True
        assert signals.life_loss_terminal is (protocol == "nature")
        assert isinstance(signals.env, DropChannel)
        env.close()


@pytest.mark.parametrize("protocol", ["nature", "v5"])
def test_the_gymnasium_backends_apply_the_same_protocol(protocol: str) -> None:
    env = breakout(protocol, vectorization_mode="sync")
    single = env.unwrapped.envs[0]  # type: ignore[attr-defined]
    settings = PROTOCOLS[protocol]
    assert isinstance(single, FireOnReset) is settings.fire_reset
    preprocessing = single.env if settings.fire_reset else single
    assert isinstance(preprocessing, gym.wrappers.AtariPreprocessing)
    assert (preprocessing.noop_max, preprocessing.frame_skip) == (settings.noop_max, 4)
    ale = preprocessing.unwrapped
    assert ale._frameskip == 1  # type: ignore[attr-defined]
    assert ale.spec.kwargs["repeat_action_probability"] == settings.repeat_action_probability
    env.close()


@pytest.mark.parametrize("mode", ["ale", "sync"])
def test_preprocessed_frames_are_84x84_uint8_and_stacked_channels_first(mode: str) -> None:
    env = breakout("nature", lanes=2, vectorization_mode=mode, frame_stack=4)
    stack = find_stack(env)
    assert stack is not None and stack.frame_space.shape == (84, 84)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs, *_ = env.step(rng.integers(4, size=2))
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert env.single_observation_space.shape == (4, 84, 84)
    assert 0 < int(obs.max()) <= 255 and obs.std() > 0  # a real, non-blank screen
    env.close()


@pytest.mark.parametrize(("protocol", "life_losses"), [("nature", True), ("v5", False)])
def test_breakout_learns_from_lives_under_nature_and_from_games_under_v5(
    protocol: str, life_losses: bool
) -> None:
    """Random play: under ``nature`` the buffer holds terminals that are not game overs (the
    row after them is no reset row); under ``v5`` every terminal is a game over. Either way the
    collector counts games."""
    env = breakout(protocol, lanes=2)
    buffer = ReplayBuffer(capacity=2 * 800, num_envs=2, obs_shape=(84, 84), obs_dtype=np.uint8)
    rng = np.random.default_rng(0)
    collector = VectorCollector(env, lambda obs, t: rng.integers(4, size=2), buffer, seed=0)
    collector.collect(700)
    term = buffer.terminated[: buffer.rows_written - 1]
    followed_by_reset = buffer.reset_step[1 : buffer.rows_written]
    game_overs = int((term & followed_by_reset).sum())
    assert collector.episodes == game_overs >= 2
    assert bool((term & ~followed_by_reset).any()) is life_losses
    env.close()


# -- convolutional encoders -----------------------------------------------------------------------
def nature_cnn(obs_shape: tuple[int, ...], **options: Any) -> ConvEncoder:
    """The Nature DQN torso, its numbers written out by hand from the paper."""
    return ConvEncoder(
        obs_shape=obs_shape,
        channels=[32, 64, 64],
        kernels=[8, 4, 3],
        strides=[4, 2, 1],
        hidden=512,
        scale=1 / 255,
        **options,
    )


def test_the_nature_cnn_has_the_papers_shapes() -> None:
    encoder = nature_cnn((4, 84, 84))
    # conv 4->32 8x8, 32->64 4x4, 64->64 3x3; fc 7*7*64 = 3136 -> 512
    expected = (4 * 32 * 64 + 32) + (32 * 64 * 16 + 64) + (64 * 64 * 9 + 64) + (3136 * 512 + 512)
    assert sum(p.numel() for p in encoder.parameters()) == expected == 1_684_128
    out = encoder(torch.randint(0, 256, (3, 4, 84, 84)).float())
    assert out.shape == (3, 512) and encoder.out_features == 512
    assert nature_cnn((84, 84))(torch.zeros(2, 84, 84)).shape == (2, 512)  # one frame: C = 1


def test_frames_are_scaled_to_unit_range_inside_the_network() -> None:
    encoder = nature_cnn((4, 84, 84))
    frames = torch.randint(0, 256, (2, 4, 84, 84)).float()
    first_conv = encoder.conv[0]
    scaled = first_conv(frames / 255.0)
    captured: dict[str, torch.Tensor] = {}
    first_conv.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    encoder(frames)
    torch.testing.assert_close(captured["out"], scaled)


def test_the_minatar_cnn_reads_channels_last_booleans() -> None:
    encoder = ConvEncoder(
        obs_shape=(10, 10, 4),
        channels=[16],
        kernels=[3],
        strides=[1],
        hidden=128,
        channels_last=True,
    )
    assert sum(p.numel() for p in encoder.parameters()) == (4 * 16 * 9 + 16) + (1024 * 128 + 128)
    obs = torch.rand(5, 10, 10, 4) < 0.3
    out = encoder(obs.float())
    conv, fc = encoder.conv[0], encoder.fc
    by_hand = torch.relu(fc(torch.relu(conv(obs.float().permute(0, 3, 1, 2))).flatten(1)))
    torch.testing.assert_close(out, by_hand)


def test_image_layouts() -> None:
    assert image_layout((4, 84, 84), channels_last=False) == (4, 84, 84)
    assert image_layout((84, 84), channels_last=False) == (1, 84, 84)
    assert image_layout((10, 10, 7), channels_last=True) == (7, 10, 10)
    assert image_layout((2, 10, 10, 7), channels_last=True) == (14, 10, 10)  # a stack of 2
    with pytest.raises(ValueError, match="channels-first"):
        image_layout((4,), channels_last=False)


# -- MinAtar ----------------------------------------------------------------------------------
def test_minatar_gives_channels_last_booleans_and_resumes_exactly() -> None:
    from rl_lightning.data.collector import env_state, load_env_state

    def make() -> gym.vector.VectorEnv:
        return make_vector_env(id="MinAtar/Breakout-v1", num_envs=2, vectorization_mode="sync")

    env = make()
    assert env.single_observation_space.shape == (10, 10, 4)
    assert env.single_observation_space.dtype == np.bool_
    env.reset(seed=0)
    for t in range(30):
        env.step(np.array([t % 3, 1]))
    state = env_state(env)  # pure Python: the whole game state pickles
    ahead = [env.step(np.array([t % 3, (t + 1) % 3]))[0].copy() for t in range(40)]
    other = make()
    other.reset(seed=5)
    load_env_state(other, state)
    again = [other.step(np.array([t % 3, (t + 1) % 3]))[0].copy() for t in range(40)]
    np.testing.assert_array_equal(np.stack(ahead), np.stack(again))


def test_the_memory_format_changes_the_layout_not_the_numbers() -> None:
    frames = torch.randint(0, 256, (3, 4, 84, 84)).float()
    outputs = []
    for memory_format in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        encoder = nature_cnn((4, 84, 84), memory_format=memory_format)
        weight = encoder.conv[0].weight
        assert weight.is_contiguous(memory_format=encoder.memory_format)
        assert weight.is_contiguous() is (memory_format == "contiguous")
        outputs.append(encoder(frames))
    torch.testing.assert_close(outputs[0], outputs[1])
    with pytest.raises(ValueError, match="memory_format"):
        ConvEncoder(
            obs_shape=(4, 8, 8),
            channels=[4],
            kernels=[3],
            strides=[1],
            hidden=8,
            memory_format="nhwc",
        )
