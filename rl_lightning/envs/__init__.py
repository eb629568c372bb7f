"""Environments: the factory and small MDPs with known Q*."""

from rl_lightning.envs.chain import ChainEnv, chain_optimal_q
from rl_lightning.envs.make import make_env_from_config, make_vector_env, register_envs

__all__ = [
    "ChainEnv",
    "chain_optimal_q",
    "make_env_from_config",
    "make_vector_env",
    "register_envs",
]
