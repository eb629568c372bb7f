"""Q-networks: encoders and heads composed from config (``arch.encoder``, ``arch.head``),
recurrent networks, action-in networks, tables, linear models, and ``build_q_network`` that builds any of them."""

from rl_lightning.networks.action_in import ActionInQNetwork
from rl_lightning.networks.build import build_q_network
from rl_lightning.networks.conv import ConvEncoder
from rl_lightning.networks.distributional import CategoricalHead, QuantileHead
from rl_lightning.networks.encoders import Encoder, MLPEncoder
from rl_lightning.networks.heads import (
    DuelingHead,
    LinearHead,
    NoisyLinearHead,
    QHead,
    linear_head,
)
from rl_lightning.networks.linear import FeatureMap, LinearQNetwork
from rl_lightning.networks.noisy import NoisyLinear
from rl_lightning.networks.q_network import ActionOutQNetwork, MLPQNetwork, QNetwork
from rl_lightning.networks.recurrent import RecurrentEncoder, RecurrentQNetwork, is_recurrent
from rl_lightning.networks.tabular import TabularQNetwork

__all__ = [
    "ActionInQNetwork",
    "ActionOutQNetwork",
    "CategoricalHead",
    "ConvEncoder",
    "DuelingHead",
    "Encoder",
    "FeatureMap",
    "LinearHead",
    "LinearQNetwork",
    "MLPEncoder",
    "MLPQNetwork",
    "NoisyLinear",
    "NoisyLinearHead",
    "QHead",
    "QNetwork",
    "QuantileHead",
    "RecurrentEncoder",
    "RecurrentQNetwork",
    "TabularQNetwork",
    "build_q_network",
    "is_recurrent",
    "linear_head",
]
