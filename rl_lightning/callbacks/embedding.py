"""t-SNE of the penultimate layer at the end of training (``embedding.enabled=true``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from rl_lightning.module import QLearningModule


class EmbeddingCallback(pl.Callback):
    """When training ends, plays greedy episodes, embeds the visited states' penultimate-layer
    activations with t-SNE and writes ``path`` (a PNG coloured by V(s) = max_a Q(s, a), and
    the points as ``.npz`` beside it); W&B loggers get the picture as ``embedding/tsne``.

    Args:
        make_env: builds the vector env the episodes are played on (called once).
        path: the PNG to write.
        episodes: greedy episodes to play.
        seed: env and t-SNE seed.
        max_points: states kept for t-SNE (a uniform subsample).
        perplexity: t-SNE perplexity.
        title: the picture's first title line.
    """

    def __init__(
        self,
        *,
        make_env: Callable[[], gym.vector.VectorEnv],
        path: Path,
        episodes: int,
        seed: int,
        max_points: int = 2_000,
        perplexity: float = 30.0,
        title: str = "",
    ) -> None:
        try:  # fail at start, not after training, without scikit-learn
            import sklearn.manifold  # noqa: F401
        except ImportError as exc:  # pragma: no cover - the dev extra installs it
            from rl_lightning.embed import INSTALL_HINT

            raise ImportError(INSTALL_HINT) from exc

        self.make_env = make_env
        self.path = Path(path)
        self.episodes = int(episodes)
        self.seed = int(seed)
        self.max_points = int(max_points)
        self.perplexity = float(perplexity)
        self.title = title

    def on_train_end(self, trainer: pl.Trainer, pl_module: QLearningModule) -> None:  # type: ignore[override]
        if not trainer.is_global_zero:
            return
        from rl_lightning.embed import embed_q_network, save_embedding

        env = self.make_env()
        try:
            embedding = embed_q_network(
                pl_module.q_network,
                env,
                episodes=self.episodes,
                seed=self.seed,
                max_points=self.max_points,
                perplexity=self.perplexity,
            )
        finally:
            env.close()
        save_embedding(embedding, self.path, title=self.title)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    key="embedding/tsne", images=[str(self.path)], step=pl_module.env_steps
                )
