"""rl-report regenerated from the fixture runs (tests/fixtures/report_multirun): the table
holds the hand-checked numbers, failed runs are listed, and every PNG opens."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from rl_lightning.report import main, write_report

FIXTURES = Path(__file__).parents[1] / "fixtures" / "report_multirun"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return write_report([FIXTURES], tmp_path_factory.mktemp("report"), reps=500)


def test_report_table_by_hand(report) -> None:
    text = report.path.read_text()
    assert "9 runs in 3 groups (8 completed, 1 failed)" in text
    assert "Settings shared by every group: `experiment=ablation_target`" in text
    # final returns (20, 60, 100): mean 60, population std sqrt(3200/3) = 32.7, IQM of three
    # runs = their mean, CI within [min, max]; env steps and wall time of completed runs
    table = [line for line in text.splitlines() if "| CartPole-v1 |" in line]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table}
    assert len(rows) == 3
    none = rows["ablation/target=none"]
    assert "| CartPole-v1 | 3 (0,1,2) | 0 | 60.0 ± 32.7 | 60.0 [" in none
    assert none.endswith("| 20000 | 11.0 |")  # wall 10, 11, 12 s
    assert (
        "| 3 (0,1,2) | 0 | 493.3 ± 9.4 | 493.3 [480.0, 500.0] |" in rows["ablation/target=hard_128"]
    )
    polyak = rows["ablation/target=polyak_0.05"]
    assert "| 2 (0,1) | 1 | 400.0 ± 100.0 | 400.0 [300.0, 500.0] |" in polyak
    # P(hard_128 > polyak_0.05) = 4 / 6 (ties count one half); none never beats the others
    assert "| ablation/target=hard_128 | ablation/target=polyak_0.05 | 0.67 [" in text
    assert "| ablation/target=none | ablation/target=hard_128 | 0.00 [0.00, 0.00] |" in text
    # the failed run: listed with its error
    assert "## Failed runs" in text
    assert "fault_injection.fail_at_env_steps=7000 reached" in text
    assert f"`{FIXTURES / '8'}`" in text


def test_report_figures_open(report) -> None:
    assert set(report.figures) == {
        "learning_curves",
        "final_returns",
        "probability_of_improvement",
        "performance_profile",
    }
    text = report.path.read_text()
    for key, path in report.figures.items():
        assert path.parent == report.path.parent
        assert f"]({path.name})" in text, key  # linked from report.md
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, key
        assert image[..., :3].std() > 0.01, key  # not blank


def test_learning_curves_group_stats(report) -> None:
    by_label = {s.label: s for s in report.groups}
    hard = by_label["ablation/target=hard_128"]
    # three evaluations plus the final one, shared by all three seeds
    assert list(hard.grid) == [5120.0, 10240.0, 15360.0, 20000.0]
    mid, low, high = hard.curve
    assert mid[-1] == pytest.approx(493.33, abs=0.01)
    assert (low <= mid).all() and (mid <= high).all()
    # the polyak group's seed 1 has no history in its summary: its CSV log gives the curve
    polyak = by_label["ablation/target=polyak_0.05"]
    assert len(polyak.completed) == 2 and len(polyak.failed) == 1
    assert polyak.curve[0][0] == pytest.approx((30.0 + 50.0) / 2)


def test_rl_report_command_and_wandb_upload(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    path = main([str(FIXTURES), "--out", str(out), "--reps", "200", "--wandb", "offline"])
    assert path == out / "report.md" and path.is_file()
    assert "3 groups, 1 failed runs" in capsys.readouterr().out
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = list(runs[0].glob("files/media/images/report/*.png"))
    assert len(images) == 4


def test_rl_report_without_runs_exits_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 2
