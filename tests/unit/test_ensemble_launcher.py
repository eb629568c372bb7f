"""hydra/launcher=ensemble: which jobs train together, and in how many processes."""

from __future__ import annotations

import pytest

from hydra_plugins.rl_lightning_ensemble import group_key, split
from rl_lightning.ensemble.run import Unsupported, check_ensemble_config


def test_the_launcher_splits_groups_into_chunks() -> None:
    assert group_key(["seed=3", "env=acrobot", "+resume=auto"]) == ("env=acrobot",)
    # whole groups, then max_members, then the largest halved until there are n_jobs
    assert split([[0, 1, 2, 3, 4], [5, 6]], None, 1) == [[0, 1, 2, 3, 4], [5, 6]]
    assert split([[0, 1, 2, 3, 4], [5, 6]], 2, 1) == [[0, 1], [2, 3], [4], [5, 6]]
    assert split([[0, 1, 2, 3, 4]], None, 2) == [[0, 1, 2], [3, 4]]
    assert split([[0, 1, 2, 3, 4], [5, 6]], None, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split([[0], [1]], None, 4) == [[0], [1]]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["buffer=prioritized"], "uniform replay"),
        (["trainer=ddp_cpu"], "DDP"),
        (["trainer=gpu"], "CPU"),
        (["exploration=noisy"], "random stream"),
        (["arch.encoder.norm=batchnorm"], "batchnorm"),
        (["arch/head=quantile"], "QuantileTDLoss"),
    ],
)
def test_what_an_ensemble_cannot_train_is_said_before_anything_runs(
    compose_config, overrides: list[str], words: str
) -> None:
    with pytest.raises(Unsupported, match=words):
        check_ensemble_config(compose_config(overrides))


def test_the_default_run_and_c51_can_be_ensembled(compose_config) -> None:
    check_ensemble_config(compose_config([]))
    check_ensemble_config(compose_config(["arch/head=distributional"]))
