"""Q-networks: encoders and heads."""

from rl_lightning.networks.q_network import MLPEncoder, MLPQNetwork, QNetwork

__all__ = ["MLPEncoder", "MLPQNetwork", "QNetwork"]
