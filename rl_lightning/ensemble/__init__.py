"""Many seeds in one process: N independent runs of one configuration, learning in one vmapped
update (``EnsembleLearner``)."""

from rl_lightning.ensemble.learner import EnsembleLearner, check_members

__all__ = ["EnsembleLearner", "check_members"]
