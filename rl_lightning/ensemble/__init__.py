"""Many seeds in one process: N independent runs of one configuration, learning in one batched
update (``EnsembleLearner``: hand-batched layers, or vmap)."""

from rl_lightning.ensemble.learner import EnsembleLearner, check_members

__all__ = ["EnsembleLearner", "check_members"]
