"""Every estimator x arch x exploration x target combination composes and trains 300 env steps.

The options are read from ``conf/<group>/*.yaml``. The full product (4 x 4 x 5 x 3 = 240 runs,
about 0.4 s each: 100 s on two cores, Hydra composition included) is marked slow; the default
suite runs a pairwise covering array instead: every pair of options of any two groups trains
together at least once (20 runs, the minimum 5 x 4, in about 13 s)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rl_lightning.train import CONFIG_DIR, train

GROUPS = ("estimator", "arch", "exploration", "target")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


FACTORS = {group: options(group) for group in GROUPS}


def pairwise(factors: dict[str, list[str]]) -> list[dict[str, str]]:
    """A deterministic pairwise covering array (IPOG: Lei et al., 2007).

    Start from the product of the two largest factors, then add one factor at a time: extend
    every row with the value covering the most still-uncovered pairs (horizontal growth), and
    put the pairs left over into rows whose other entries are free (vertical growth).
    """
    names = sorted(factors, key=lambda name: -len(factors[name]))  # stable: ties keep order
    rows: list[list[str | None]] = [
        list(p) for p in itertools.product(*map(factors.get, names[:2]))
    ]
    for i in range(2, len(names)):
        values = factors[names[i]]
        uncovered = {(j, u, v) for j in range(i) for u in factors[names[j]] for v in values}
        for row in rows:
            gains = [sum((j, row[j], v) in uncovered for j in range(i)) for v in values]
            best = values[gains.index(max(gains))]  # the first value among equals
            row.append(best)
            uncovered -= {(j, row[j], best) for j in range(i)}
        for j, u, v in sorted(uncovered):
            for row in rows:
                if row[j] in (u, None) and row[i] in (v, None):
                    row[j], row[i] = u, v
                    break
            else:
                new: list[str | None] = [None] * (i + 1)
                new[j], new[i] = u, v
                rows.append(new)
    # free entries of vertically grown rows: any value will do
    return [
        {
            name: value if value is not None else factors[name][0]
            for name, value in zip(names, row, strict=True)
        }
        for row in rows
    ]


COVERING = pairwise(FACTORS)
FULL = [
    dict(zip(GROUPS, combo, strict=True)) for combo in itertools.product(*map(FACTORS.get, GROUPS))
]


def case_id(case: dict[str, str]) -> str:
    return "-".join(case[group] for group in GROUPS)


def test_the_options_are_the_documented_ones() -> None:
    assert FACTORS["estimator"] == ["double_q", "expected_sarsa", "q_learning", "sarsa"]
    assert FACTORS["arch"] == ["linear", "mlp", "mlp_action_in", "tabular"]
    assert len(FACTORS["exploration"]) >= 5
    assert FACTORS["target"] == ["hard", "none", "polyak"]


def test_the_covering_array_covers_every_pair() -> None:
    for case in COVERING:
        assert set(case) == set(GROUPS)
        assert all(case[g] in FACTORS[g] for g in GROUPS)
    for g1, g2 in itertools.combinations(GROUPS, 2):
        covered = {(case[g1], case[g2]) for case in COVERING}
        assert covered == set(itertools.product(FACTORS[g1], FACTORS[g2])), (g1, g2)
    sizes = sorted(len(v) for v in FACTORS.values())
    assert sizes[-1] * sizes[-2] <= len(COVERING) <= sizes[-1] * sizes[-2] + 6
    assert len(COVERING) < len(FULL)


def train_combination(compose_config, tmp_path: Path, case: dict[str, str]) -> None:
    overrides = ["debug=fast", "logger=none", *(f"{g}={case[g]}" for g in GROUPS)]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["env_steps"] >= 300
    assert summary["updates"] > 0
    # debug=fast replays from 1000 time steps, more than 4 bursts of 8 * 2 env steps: only
    # SARSA (n = 1 everywhere here) is warned about
    assert ("warnings" in summary) == (case["estimator"] == "sarsa")


@pytest.mark.parametrize("case", COVERING, ids=case_id)
def test_pairwise_combination_trains(compose_config, tmp_path: Path, case) -> None:
    train_combination(compose_config, tmp_path, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", FULL, ids=case_id)
def test_every_combination_trains(compose_config, tmp_path: Path, case) -> None:
    train_combination(compose_config, tmp_path, case)
