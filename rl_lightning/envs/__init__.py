"""Environments: the factory, partial-observability wrappers and small MDPs with known Q*."""

from rl_lightning.envs.chain import ChainEnv, chain_optimal_q
from rl_lightning.envs.make import (
    env_option_problems,
    make_env_from_config,
    make_vector_env,
    register_envs,
)
from rl_lightning.envs.signals import LEARN_REWARD, LEARN_TERMINATED, LearningSignals
from rl_lightning.envs.wrappers import (
    FlickerObservation,
    MaskObservation,
    StackLayout,
    StackObservations,
    find_stack,
    find_wrapper,
)

__all__ = [
    "LEARN_REWARD",
    "LEARN_TERMINATED",
    "LearningSignals",
    "find_wrapper",
    "ChainEnv",
    "FlickerObservation",
    "MaskObservation",
    "StackLayout",
    "StackObservations",
    "chain_optimal_q",
    "env_option_problems",
    "find_stack",
    "make_env_from_config",
    "make_vector_env",
    "register_envs",
]
