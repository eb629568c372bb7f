"""docs/extending.md is tested code: its examples are built here, so the page cannot drift.

The page marks every new file's code block with its path (```` ```python file=PATH ````) and
every addition to an existing file with that file (```` ```python snippet=PATH ````). This test
writes the ``file=`` blocks into a scratch overlay (never into the package or ``conf/``), loads
the python ones under their module names (in ``sys.modules`` for this module's tests, removed
after), composes the real ``conf/config.yaml`` with the overlay's ``conf/`` on Hydra's search path
(``hydra.searchpath=[file://...]``), runs each snippet in the namespace of the file it belongs
to, and then

* builds every example through the real builders and checks values worked out by hand: the
  Mellowmax target of the page (1.645201) through ``TDLoss``, the CNN's (B, A) output under both
  heads, the recency sampler's ages on a buffer filled by the collector, the two-state env's
  returns through ``make_env``, the callback through ``build_callbacks``;
* checks the page's rule that a callback leaves the run unchanged (bit-identical weights with
  and without it, under noisy exploration);
* trains one ``debug=fast`` run with the new env, estimator, sampler and callback together;
* runs every ``test_*`` function of the page's test files.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rl_lightning import builders, networks
from rl_lightning.context import RunContext
from rl_lightning.data import TransitionBatch
from rl_lightning.envs import make as env_factory
from rl_lightning.networks.noisy import NoisyLinear
from rl_lightning.networks.numpy_forward import NumpyMLP
from rl_lightning.run import Run
from rl_lightning.train import CONFIG_DIR, train
from rl_lightning.validation import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "extending.md"


# -- the page's code blocks --------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    lang: str
    options: dict[str, str]  # file=PATH, snippet=PATH
    code: str
    line: int


FENCE = re.compile(r"^(?P<indent> *)```(?P<info>.*)$")


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, in order (indented ones dedented)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    start: int | None = None
    indent, info = 0, [""]
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if match is None:
            continue
        if start is None:
            start, indent, info = number, len(match["indent"]), match["info"].split() or [""]
        elif not match["info"].strip():
            body = "".join(f"{ln[indent:]}\n" for ln in lines[start : number - 1])
            options = dict(token.split("=", 1) for token in info[1:] if "=" in token)
            blocks.append(Block(info[0], options, body, start))
            start = None
    assert start is None, f"unclosed code block at line {start}"
    return blocks


BLOCKS = parse_blocks(DOC.read_text())
FILES = {b.options["file"]: b for b in BLOCKS if "file" in b.options}
SNIPPETS = {b.options["snippet"]: b for b in BLOCKS if "snippet" in b.options}
#: the page's own tests: (file, function), read at collection time
DOC_TESTS = [
    (path, node.name)
    for path, block in {**FILES, **SNIPPETS}.items()
    if path.startswith("tests/")
    for node in ast.parse(block.code).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
]


def prose(text: str) -> str:
    """The page without its code blocks."""
    return re.sub(r"^ *```.*?^ *```$", "", text, flags=re.M | re.S)


def test_every_code_block_is_tested_and_every_file_is_named() -> None:
    assert set(FILES) == {
        "rl_lightning/estimators/mellowmax.py",
        "conf/estimator/mellowmax.yaml",
        "tests/unit/test_mellowmax.py",
        "rl_lightning/networks/small_cnn.py",
        "conf/arch/encoder/small_cnn.yaml",
        "rl_lightning/data/recent_sampler.py",
        "conf/buffer/recent.yaml",
        "tests/unit/test_recent_sampler.py",
        "rl_lightning/envs/two_state.py",
        "conf/env/two_state.yaml",
        "tests/unit/test_two_state.py",
        "rl_lightning/callbacks/start_values.py",
        "conf/callbacks/start_values.yaml",
        "tests/integration/test_start_values.py",
    }
    assert set(SNIPPETS) == {"tests/unit/test_networks.py", "rl_lightning/envs/make.py"}
    for block in BLOCKS:  # no python or yaml on the page that this test does not run
        if block.lang in ("python", "yaml"):
            assert set(block.options) & {"file", "snippet"}, f"untested block at line {block.line}"
    for path in FILES:  # new files only: a component touches its own files ...
        assert not (ROOT / path).exists(), f"{path} exists: the example must not overwrite it"
    for path in SNIPPETS:  # ... and an addition goes into a file that exists
        assert (ROOT / path).is_file(), path
    text = prose(DOC.read_text())
    for path in [*FILES, *SNIPPETS]:  # every file touched is named in the text
        assert f"`{path}`" in text, f"{path} is not named in a list of files touched"


# -- the overlay ---------------------------------------------------------------------------------
def load_module(name: str, path: Path, added: list[str]) -> ModuleType:
    """Execute ``path`` as module ``name``, registered in sys.modules (and on its parent
    package, as an import would); ``added`` collects the names to remove afterwards."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    added.append(name)
    spec.loader.exec_module(module)
    parent, _, leaf = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], leaf, module)
    return module


@dataclass
class Overlay:
    root: Path  # the scratch tree: <root>/rl_lightning/..., <root>/conf/..., <root>/tests/...
    namespaces: dict[str, dict[str, Any]]  # each test file's (or snippet's) globals

    def compose(self, overrides: list[str]) -> DictConfig:
        """The real ``conf/config.yaml`` with the overlay's options on the search path."""
        GlobalHydra.instance().clear()
        searchpath = f"hydra.searchpath=[file://{self.root / 'conf'}]"
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=[searchpath, *overrides])


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Overlay]:
    root = tmp_path_factory.mktemp("extending")
    for path, block in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(block.code)
    added: list[str] = []
    registered: set[str] = set()
    namespaces: dict[str, dict[str, Any]] = {}
    try:
        # the package's new modules first (the tests import them), in the page's order
        for path in FILES:
            if path.startswith("rl_lightning/") and path.endswith(".py"):
                load_module(path.removesuffix(".py").replace("/", "."), root / path, added)
        # the env's registration, run where it goes: in rl_lightning/envs/make.py's namespace
        before = set(gym.registry)
        exec(SNIPPETS["rl_lightning/envs/make.py"].code, dict(vars(env_factory)))
        registered = set(gym.registry) - before
        for path in FILES:
            if path.startswith("tests/"):
                module = load_module(f"_extending_doc.{Path(path).stem}", root / path, added)
                namespaces[path] = vars(module)
        # an addition to a test file runs in that file's namespace
        path = "tests/unit/test_networks.py"
        tests = load_module("_extending_doc.test_networks", ROOT / path, added)
        namespaces[path] = dict(vars(tests))
        exec(SNIPPETS[path].code, namespaces[path])
        yield Overlay(root, namespaces)
    finally:
        GlobalHydra.instance().clear()
        for name in reversed(added):
            sys.modules.pop(name, None)
            parent, _, leaf = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], leaf, None) is not None:
                delattr(sys.modules[parent], leaf)
        for env_id in registered:
            del gym.registry[env_id]


# -- 1. the estimator ----------------------------------------------------------------------------
def test_mellowmax_target_through_the_loss(overlay: Overlay) -> None:
    assert overlay.compose(["estimator=mellowmax"]).estimator.omega == 5.0  # the yaml's
    # the page's hand-computed case: omega = 2, q_t = (0, 1), r_t = 1, gamma = 0.9 -> 1.645201
    cfg = overlay.compose(
        [
            "estimator=mellowmax",
            "estimator.omega=2",
            "gamma=0.9",
            "target=none",  # bootstrap from the online network, whose Q-values are set below
            "arch.encoder.hidden_sizes=[]",
            "arch.head.init_zero=true",
        ]
    )
    validate_config(cfg)
    env = builders.make_env(cfg, num_envs=1)
    q_network = builders.build_q_network(cfg, env)
    env.close()
    module = builders.build_module(cfg, q_network, instantiate(cfg.exploration))
    assert type(module.estimator).__name__ == "Mellowmax" and module.estimator.omega == 2.0
    with torch.no_grad():
        q_network.head.bias.copy_(torch.tensor([0.0, 1.0]))  # Q(s, .) = (0, 1) everywhere
    batch = TransitionBatch(
        obs=torch.zeros(2, 4),
        actions=torch.tensor([0, 1]),
        rewards=torch.tensor([[1.0], [1.0]]),
        n_steps=torch.ones(2, dtype=torch.long),
        terminated=torch.tensor([0.0, 1.0]),  # the second window ended: y = r_t
        next_obs=torch.zeros(2, 4),
        next_actions=torch.zeros(2, dtype=torch.long),
    )
    target = module.loss.td_target(batch)
    torch.testing.assert_close(target, torch.tensor([1.645201, 1.0]), rtol=0, atol=1e-5)


def test_a_misspelt_estimator_key_is_named(overlay: Overlay) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(overlay.compose(["estimator=mellowmax", "+estimator.omga=3"]))
    assert (  # the message the page quotes
        "estimator.omga=3 is not a parameter of rl_lightning.estimators.mellowmax.Mellowmax: "
        "allowed keys are n_step, omega (did you mean omega?)"
    ) in str(error.value)


# -- 2. the network part -------------------------------------------------------------------------
def no_bounds() -> tuple[list[float], list[float]]:
    raise AssertionError("the CNN declares no obs_low/obs_high: the bounds are never asked for")


@pytest.mark.parametrize("head", ["linear", "dueling"])
def test_the_cnn_encoder_under_either_head(overlay: Overlay, head: str) -> None:
    obs_shape = overlay.namespaces["tests/unit/test_networks.py"]["ENCODER_OBS_SHAPES"]["small_cnn"]
    assert obs_shape == (3, 8, 8)
    cfg = overlay.compose(["arch/encoder=small_cnn", f"arch/head={head}"])
    validate_config(cfg)  # the encoder's keys against its constructor

    def build(overrides: dict[str, Any]) -> nn.Module:
        torch.manual_seed(0)
        return networks.build_q_network(
            cfg.arch, obs_shape=obs_shape, num_actions=4, obs_bounds=no_bounds, overrides=overrides
        )

    net = build({})
    assert type(net.encoder).__name__ == "SmallCNNEncoder"
    assert isinstance(net.head, networks.DuelingHead if head == "dueling" else networks.LinearHead)
    obs = torch.rand(5, *obs_shape)
    assert net.features(obs).shape == (5, 128)  # hidden_size from the yaml
    assert net(obs).shape == (5, 4)
    assert net.q_values(obs, torch.tensor([0, 1, 2, 3, 0])).shape == (5,)
    assert net(torch.zeros(2, *obs_shape, dtype=torch.uint8)).shape == (2, 4)  # frames cast
    assert NumpyMLP.build(net) is None  # a CNN acts through torch
    # exploration=noisy: the encoder's linear layer and the head turn noisy, the convolutions not
    noisy = build({"noisy": True})
    assert isinstance(noisy.encoder[5], NoisyLinear)
    assert any(isinstance(m, NoisyLinear) for m in noisy.head.modules())
    assert not any(isinstance(m, NoisyLinear) for m in list(noisy.encoder)[:5])
    with pytest.raises(ValueError, match=r"needs \['dropout'\] in the network, which no part"):
        build({"dropout": 0.1})  # exploration=dropout: no part declares `dropout`


# -- 3. the sampler ------------------------------------------------------------------------------
def test_the_recent_sampler_draws_recent_rows(overlay: Overlay) -> None:
    cfg = overlay.compose(["buffer=recent", "buffer.sampler.mean_age_rows=2", "env.num_envs=2"])
    validate_config(cfg)
    assert cfg.buffer.capacity == 100_000 and cfg.buffer.learning_starts_env_steps == 1_000
    cfg.buffer.capacity = 200  # 100 rows per lane: the buffer wraps below
    env = builders.make_env(cfg)
    q_network = builders.build_q_network(cfg, env)
    datamodule = builders.build_datamodule(
        cfg, env, q_network, instantiate(cfg.exploration), n_step=1
    )
    sampler, buffer = datamodule.sampler, datamodule.buffer
    assert type(sampler).__name__ == "RecentSampler" and sampler.q == 0.5  # 1 - 1/2
    assert buffer.capacity == 200  # not online: buffer.capacity
    datamodule.collector.collect(150)  # CartPole: every stored observation is distinct
    env.close()
    slot_of = {row.tobytes(): slot for slot, row in enumerate(buffer.obs.reshape(200, 4))}
    batch = sampler.sample(buffer, 4_000, 1)
    slots = np.array([slot_of[row.tobytes()] for row in batch.obs])
    newest = buffer.rows_written - 1 - 1  # the newest row whose 1-step window is complete: 148
    age = (newest - slots // buffer.num_envs) % buffer.rows
    assert not buffer.flat_reset_step[slots].any()
    # P(age = a) ~ 2^-(a + 1) (auto-reset rows redrawn): mean age about 1 row, where uniform
    # replay over the 99 stored start rows would average 49
    assert age.max() < 25 and age.mean() < 1.5 and np.bincount(age).argmax() == 0


# -- 4. the environment --------------------------------------------------------------------------
def play(env: gym.vector.VectorEnv, actions: Callable[[int], list[int]]) -> np.ndarray:
    """Undiscounted returns of one 20-step episode per lane, lane i playing actions(t)[i]."""
    env.reset(seed=0)
    returns = np.zeros(env.num_envs)
    for t in range(20):
        _, reward, terminated, truncated, _ = env.step(np.array(actions(t)))
        returns += reward
        assert not terminated.any() and truncated.all() == (t == 19)
    return returns


def test_the_two_state_env_through_make_env(overlay: Overlay) -> None:
    cfg = overlay.compose(["env=two_state"])
    validate_config(cfg)  # the id is registered, the actions are discrete
    env = builders.make_env(cfg)
    assert env.num_envs == 4 and builders.env_spaces(env) == ((2,), 2)
    assert builders.observation_bounds(cfg, env) == ([0.0, 0.0], [1.0, 1.0])

    def lanes(t: int) -> list[int]:
        # stay in A; switch once, then stay in B; switch always; switch twice, then stay in A
        return [0, int(t == 0), 1, int(t < 2)]

    np.testing.assert_array_equal(play(env, lanes), [20.0, 0 + 19 * 2.0, 0.0, 0 + 0 + 18.0])
    env.close()
    env = builders.make_env(overlay.compose(["env=two_state", "env.kwargs.reward_b=3"]), 1)
    np.testing.assert_array_equal(play(env, lambda t: [int(t == 0)]), [19 * 3.0])  # env.kwargs
    env.close()


# -- 5. the callback -----------------------------------------------------------------------------
def test_the_callback_from_the_command_line(overlay: Overlay, tmp_path: Path) -> None:
    target = "rl_lightning.callbacks.start_values.StartValueCallback"
    one_off = f"+callbacks.start_values={{_target_:{target},every_env_steps:1000}}"
    for overrides in (["env=chain", one_off], ["env=chain", "callbacks=[default,start_values]"]):
        cfg = overlay.compose(overrides)
        validate_config(cfg)
        context = RunContext(
            run_dir=tmp_path,
            seed=0,
            eval_seed=7,
            env_id=cfg.env.id,
            make_env=lambda num_envs, cfg=cfg: builders.make_env(cfg, num_envs),
        )
        callbacks = builders.build_callbacks(cfg, context)
        assert [type(c).__name__ for c in callbacks][-1] == "StartValueCallback"
        callback = callbacks[-1]
        expected = 1000 if overrides[-1] == one_off else cfg.eval.every_env_steps
        assert callback.every_env_steps == expected
        assert callback.path == tmp_path / "start_values.json"
        assert callback.obs.shape == (1, 6) and callback.obs.sum() == 1.0  # the chain's one-hot


def test_the_callback_leaves_the_run_unchanged(overlay: Overlay, tmp_path: Path) -> None:
    """The page's rule for callbacks, checked: the same weights and returns with and without."""
    results = []
    for name, extra in (("without", []), ("with", ["callbacks=[default,start_values]"])):
        overrides = ["debug=fast", "logger=none", "env=chain", "exploration=noisy", *extra]
        summary = train(overlay.compose(overrides), run_dir=tmp_path / name, overrides=overrides)
        assert summary["status"] == "completed", summary.get("error")
        weights = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
        results.append((summary["eval_returns"], weights["state_dict"]))
    assert (tmp_path / "with" / "start_values.json").is_file()
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        assert torch.equal(value, results[1][1][key]), key


# -- all together --------------------------------------------------------------------------------
def test_one_short_run_with_every_example(overlay: Overlay, tmp_path: Path) -> None:
    overrides = [
        "debug=fast",
        "logger=none",
        "env=two_state",
        "estimator=mellowmax",
        "buffer=recent",
        "buffer.sampler.mean_age_rows=50",
        "callbacks=[default,start_values]",
    ]
    cfg = overlay.compose(overrides)
    built: dict[str, Any] = {}

    def look(run: Run) -> None:
        built.update(
            estimator=type(run.module.estimator).__name__,
            sampler=type(run.datamodule.sampler).__name__,
            callbacks=[type(c).__name__ for c in run.trainer.callbacks],
        )

    summary = train(cfg, run_dir=tmp_path, overrides=overrides, on_built=look)
    assert summary["status"] == "completed", summary.get("error")
    assert built["estimator"] == "Mellowmax" and built["sampler"] == "RecentSampler"
    assert "StartValueCallback" in built["callbacks"]
    # debug=fast: 64 warm-up env steps, then 15 bursts of 8 updates x 2 env steps; both lanes
    # reset together (20-step episodes), so the counts are exact
    assert (summary["env_steps"], summary["updates"]) == (300, 15 * 8)
    # a 20-step episode returns at most 0 + 19 * 2 = 38 (switch once, then stay in B)
    assert all(0.0 <= r <= 38.0 for r in summary["eval_returns"])
    history = json.loads((tmp_path / "start_values.json").read_text())
    assert [h["env_steps"] for h in history] == [208]  # the first burst end past 200
    assert len(history[0]["q"]) == 2 and all(np.isfinite(history[0]["q"]))
    stored = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    config = OmegaConf.create(stored["rl_lightning"]["config"])
    assert config.estimator._target_ == "rl_lightning.estimators.mellowmax.Mellowmax"


# -- the page's own tests ------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "name"), DOC_TESTS, ids=[f"{p}::{n}" for p, n in DOC_TESTS])
def test_the_pages_tests_pass(overlay: Overlay, tmp_path: Path, path: str, name: str) -> None:
    function = overlay.namespaces[path][name]
    fixtures = {"tmp_path": tmp_path, "compose_config": overlay.compose}
    function(**{p: fixtures[p] for p in inspect.signature(function).parameters})
