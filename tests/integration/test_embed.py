"""rl-embed and the end-of-training embedding callback: the PNG's colour scale is V(s)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from rl_lightning.embed import Embedding, main, plot_embedding
from rl_lightning.evaluate import load_q_network
from rl_lightning.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A short CartPole run with the embedding callback and an offline W&B logger."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rl_lightning.train import CONFIG_DIR

    run_dir = tmp_path_factory.mktemp("run")
    overrides = ["debug=fast", "logger=wandb", "embedding.enabled=true", "embedding.episodes=2"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    GlobalHydra.instance().clear()
    summary = train(cfg, run_dir=run_dir, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    return run_dir


def test_callback_writes_the_picture_and_logs_it(trained_run: Path) -> None:
    png = trained_run / "embedding.png"
    assert matplotlib.image.imread(png).shape[0] > 200
    points = np.load(trained_run / "embedding.npz")
    assert points["xy"].shape == (len(points["values"]), 2)
    assert len(points["returns"]) == 2
    logged = list(trained_run.glob("wandb/offline-run-*/files/media/images/embedding/*.png"))
    assert len(logged) == 1


def test_rl_embed_colours_points_by_v(trained_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "tsne.png"
    path = main([f"checkpoint={trained_run}", "episodes=3", f"output={output}", "max_points=50"])
    assert path == output and matplotlib.image.imread(output).ndim == 3
    points = np.load(output.with_suffix(".npz"))
    assert len(points["values"]) <= 50 and len(points["returns"]) == 3
    # the colours are V(s) = max_a Q(s, a) of the checkpoint's network at the recorded states
    q_network, _ = load_q_network(trained_run)
    q_network.eval()
    with torch.no_grad():
        v = q_network(torch.as_tensor(points["obs"])).max(dim=1).values.numpy()
    np.testing.assert_allclose(points["values"], v, rtol=1e-5, atol=1e-5)
    # a uniform subsample of the states of the three episodes
    assert set(points["episode"]) <= {0, 1, 2} and (points["step"] >= 0).all()


def test_the_colour_scale_is_v() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(3.0, 50.0, size=40)
    embedding = Embedding(
        xy=rng.normal(size=(40, 2)),
        values=values,
        obs=np.zeros((40, 4)),
        episode=np.zeros(40, dtype=int),
        step=np.arange(40),
        returns=np.array([40.0]),
    )
    fig = plot_embedding(embedding, title="test")
    scatter = fig.axes[0].collections[0]
    np.testing.assert_allclose(np.sort(scatter.get_array()), np.sort(values))
    assert (scatter.norm.vmin, scatter.norm.vmax) == (values.min(), values.max())
    colorbar_axis = fig.axes[1]
    assert colorbar_axis.get_ylabel() == "V(s) = max_a Q(s, a)"


@pytest.mark.parametrize(
    "argv",
    [[], ["episodes=2"], ["checkpoint=/no/such/run"], ["checkpoint=x", "episodes=two"], ["x"]],
)
def test_rl_embed_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
