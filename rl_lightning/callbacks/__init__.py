"""Lightning callbacks: greedy evaluation, rollout metrics, progress, embeddings, faults, the DDP
consistency check."""

from rl_lightning.callbacks.ddp_check import DDPConsistencyCheck, RanksDriftedApart
from rl_lightning.callbacks.embedding import EmbeddingCallback
from rl_lightning.callbacks.fault_injection import FaultInjectionCallback, InjectedFault
from rl_lightning.callbacks.monitor import EnvStepProgressBar, RolloutMetricsCallback
from rl_lightning.callbacks.periodic_eval import GreedyEvaluationCallback

__all__ = [
    "DDPConsistencyCheck",
    "EmbeddingCallback",
    "EnvStepProgressBar",
    "FaultInjectionCallback",
    "GreedyEvaluationCallback",
    "InjectedFault",
    "RanksDriftedApart",
    "RolloutMetricsCallback",
]
