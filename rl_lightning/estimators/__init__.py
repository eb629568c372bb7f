"""TD estimators: the pure operators and the ``Estimator`` interface live in ``core``; each
estimator is one class in its own module (``q_learning``, ``sarsa``, ``expected_sarsa``,
``double_q``, ...), chosen by ``_target_`` in ``conf/estimator/<name>.yaml``."""

from rl_lightning.estimators.core import (
    Estimator,
    TDInputs,
    bootstrap_discount,
    n_step_return,
    window_return,
)

__all__ = ["Estimator", "TDInputs", "bootstrap_discount", "n_step_return", "window_return"]
