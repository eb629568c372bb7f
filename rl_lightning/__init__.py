"""rl-lightning: value-based deep RL (the DQN family) on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
