"""t-SNE of a Q-network's penultimate layer over the states of greedy episodes, coloured by
V(s) = max_a Q(s, a): the library behind ``rl-embed`` and ``EmbeddingCallback``.

States that the network treats alike lie close together: a good representation puts states of
similar value, or of similar situations, next to each other. scikit-learn and matplotlib are
imported only when an embedding is computed or drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

INSTALL_HINT = "t-SNE needs the report extra: pip install 'rl-lightning[report]'"


@dataclass
class Embedding:
    """The states of greedy episodes, their 2-D t-SNE coordinates and values.

    Shapes: ``xy (N, 2)``, ``values (N,)``, ``obs (N, *obs_shape)``, ``episode (N,)``,
    ``step (N,)``; ``returns`` holds the undiscounted return of each episode played.
    """

    xy: np.ndarray
    values: np.ndarray
    obs: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    returns: np.ndarray

    def save(self, path: Path) -> Path:
        np.savez_compressed(
            path,
            xy=self.xy,
            values=self.values,
            obs=self.obs,
            episode=self.episode,
            step=self.step,
            returns=self.returns,
        )
        return path


@torch.no_grad()
def collect_greedy_activations(
    q_network: nn.Module,
    env: gym.vector.VectorEnv,
    *,
    episodes: int,
    seed: int,
    max_steps_per_episode: int = 108_000,
) -> dict[str, np.ndarray]:
    """Play ``episodes`` greedy episodes (as ``evaluate_greedy``: rounds of one episode per
    lane, lane i of round k seeded ``seed + k * num_envs + i``) and record each visited state.

    Returns ``obs (N, *obs_shape)``, ``features (N, F)`` = phi(s), ``values (N,)`` =
    max_a Q(s, a), ``episode (N,)``, ``step (N,)`` (time step within the episode) and
    ``returns (episodes,)``.
    """
    was_training = q_network.training
    q_network.eval()
    device = next(q_network.parameters()).device
    lanes = env.num_envs
    observations: list[np.ndarray] = []
    features: list[np.ndarray] = []
    values: list[np.ndarray] = []
    episode_ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    returns: list[float] = []
    try:
        round_idx = 0
        while len(returns) < episodes:
            keep = min(lanes, episodes - len(returns))  # lanes whose episode is recorded
            obs, _ = env.reset(seed=seed + round_idx * lanes)
            ret = np.zeros(lanes)
            done = np.zeros(lanes, dtype=bool)
            done[keep:] = True
            for t in range(max_steps_per_episode):
                obs_t = torch.as_tensor(obs, device=device)
                q = q_network(obs_t)
                live = ~done
                mask = torch.as_tensor(live, device=device)
                phi = q_network.features(obs_t)  # type: ignore[operator]
                observations.append(np.asarray(obs)[live])
                features.append(phi[mask].flatten(1).float().cpu().numpy())
                values.append(q.max(dim=1).values[mask].float().cpu().numpy())
                episode_ids.append(len(returns) + np.flatnonzero(live))
                steps.append(np.full(int(live.sum()), t))
                obs, reward, terminated, truncated, _ = env.step(q.argmax(dim=1).cpu().numpy())
                ret += np.where(done, 0.0, reward)
                done |= terminated | truncated
                if done.all():
                    break
            returns.extend(ret[:keep].tolist())
            round_idx += 1
    finally:
        q_network.train(was_training)
    return {
        "obs": np.concatenate(observations),
        "features": np.concatenate(features),
        "values": np.concatenate(values),
        "episode": np.concatenate(episode_ids),
        "step": np.concatenate(steps),
        "returns": np.asarray(returns, dtype=np.float64),
    }


def tsne(features: np.ndarray, *, perplexity: float, seed: int) -> np.ndarray:
    """(N, F) -> (N, 2) t-SNE coordinates (scikit-learn, PCA initialisation).

    The perplexity is capped at (N - 1) / 3 so that small samples still embed.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(INSTALL_HINT) from exc
    n = len(features)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 states, got {n}")
    perplexity = float(min(perplexity, (n - 1) / 3))
    model = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    return model.fit_transform(features.astype(np.float32)).astype(np.float64)


def embed_q_network(
    q_network: nn.Module,
    env: gym.vector.VectorEnv,
    *,
    episodes: int,
    seed: int,
    max_points: int,
    perplexity: float,
) -> Embedding:
    """Greedy episodes -> penultimate activations -> t-SNE, keeping at most ``max_points``."""
    data = collect_greedy_activations(q_network, env, episodes=episodes, seed=seed)
    n = len(data["values"])
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    xy = tsne(data["features"][keep], perplexity=perplexity, seed=seed)
    return Embedding(
        xy=xy,
        values=data["values"][keep].astype(np.float64),
        obs=data["obs"][keep],
        episode=data["episode"][keep],
        step=data["step"][keep],
        returns=data["returns"],
    )


def plot_embedding(embedding: Embedding, *, title: str = "") -> Any:
    """A matplotlib Figure: one point per state at its t-SNE position, coloured by V(s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6))
    order = np.argsort(embedding.values, kind="stable")  # high values drawn on top
    points = ax.scatter(
        embedding.xy[order, 0],
        embedding.xy[order, 1],
        c=embedding.values[order],
        cmap="viridis",
        s=8,
        alpha=0.85,
        linewidths=0,
    )
    fig.colorbar(points, ax=ax, label="V(s) = max_a Q(s, a)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    returns = embedding.returns
    ax.set_title(
        (title + "\n" if title else "")
        + f"{len(embedding.values)} states of {len(returns)} greedy episodes "
        f"(return {returns.mean():.1f} ± {returns.std():.1f})",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


def save_embedding(embedding: Embedding, path: Path, *, title: str = "") -> Path:
    """Write the PNG to ``path`` and the points to ``path`` with suffix ``.npz``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_embedding(embedding, title=title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    embedding.save(path.with_suffix(".npz"))
    return path
