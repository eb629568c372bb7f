"""Q-networks: action-out MLPs (linear or dueling head), action-in MLPs, tables, linear models."""

from rl_lightning.networks.action_in import ActionInQNetwork
from rl_lightning.networks.linear import FeatureMap, LinearQNetwork
from rl_lightning.networks.noisy import NoisyLinear
from rl_lightning.networks.q_network import DuelingHead, MLPEncoder, MLPQNetwork, QNetwork
from rl_lightning.networks.tabular import TabularQNetwork

__all__ = [
    "ActionInQNetwork",
    "DuelingHead",
    "FeatureMap",
    "LinearQNetwork",
    "MLPEncoder",
    "MLPQNetwork",
    "NoisyLinear",
    "QNetwork",
    "TabularQNetwork",
]
