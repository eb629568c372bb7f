"""hydra/launcher=ensemble: which jobs train together, and in how many processes."""

from __future__ import annotations

from hydra_plugins.rl_lightning_ensemble import group_key, split


def test_the_launcher_splits_groups_into_chunks() -> None:
    assert group_key(["seed=3", "env=acrobot", "+resume=auto"]) == ("env=acrobot",)
    # whole groups, then max_members, then the largest halved until there are n_jobs
    assert split([[0, 1, 2, 3, 4], [5, 6]], None, 1) == [[0, 1, 2, 3, 4], [5, 6]]
    assert split([[0, 1, 2, 3, 4], [5, 6]], 2, 1) == [[0, 1], [2, 3], [4], [5, 6]]
    assert split([[0, 1, 2, 3, 4]], None, 2) == [[0, 1, 2], [3, 4]]
    assert split([[0, 1, 2, 3, 4], [5, 6]], None, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split([[0], [1]], None, 4) == [[0], [1]]
