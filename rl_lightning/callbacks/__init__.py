"""Lightning callbacks: greedy evaluation, rollout metrics, progress."""

from rl_lightning.callbacks.evaluation import GreedyEvaluationCallback
from rl_lightning.callbacks.monitor import EnvStepProgressBar, RolloutMetricsCallback

__all__ = ["EnvStepProgressBar", "GreedyEvaluationCallback", "RolloutMetricsCallback"]
