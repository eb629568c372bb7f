"""t-SNE of the penultimate layer at the end of training (``embedding.enabled=true``)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from rl_lightning.context import RunContext
from rl_lightning.embedding import INSTALL_HINT, embed_q_network, save_embedding
from rl_lightning.module import QLearningModule


class EmbeddingCallback(pl.Callback):
    """When training ends, plays greedy episodes, embeds the visited states' penultimate-layer
    activations with t-SNE and writes ``path`` (a PNG coloured by V(s) = max_a Q(s, a), and
    the points as ``.npz`` beside it); W&B loggers get the picture as ``embedding/tsne``.

    Args:
        context: the run's facts: envs are made with ``make_env``, seeded with ``eval_seed``
            (also the t-SNE seed); the PNG goes to ``<run_dir>/<filename>``.
        episodes: greedy episodes to play (on at most 16 env lanes).
        max_points: states kept for t-SNE (a uniform subsample).
        perplexity: t-SNE perplexity.
        filename: the PNG's name in the run dir.
    """

    def __init__(
        self,
        *,
        context: RunContext,
        episodes: int,
        max_points: int = 2_000,
        perplexity: float = 30.0,
        filename: str = "embedding.png",
    ) -> None:
        if importlib.util.find_spec("sklearn") is None:  # fail at start, not after training
            raise ImportError(INSTALL_HINT)
        self.make_env = functools.partial(context.make_env, min(int(episodes), 16))
        self.path = Path(context.run_dir) / filename
        self.episodes = int(episodes)
        self.seed = int(context.eval_seed)
        self.title = f"{context.env_id}: penultimate layer at the end of training"
        self.max_points = int(max_points)
        self.perplexity = float(perplexity)

    def on_train_end(self, trainer: pl.Trainer, pl_module: QLearningModule) -> None:  # type: ignore[override]
        if not trainer.is_global_zero:
            return
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
