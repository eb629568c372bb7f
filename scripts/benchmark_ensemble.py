"""One TD update of N members on this machine: the ensemble's vmapped update against a Python loop
over N single modules and against hand-batched layers.

    python scripts/benchmark_ensemble.py                  # N = 1, 2, 5, 10, 20
    python scripts/benchmark_ensemble.py --members 1,10 --updates 50

The default run's learner (CartPole, 4-128-128-2 MLP, Double Q, Huber, Adam, gradient clipping
at 10, batch 64) on random minibatches, in one fresh process per N with one torch thread:

* ``loop``: N ``QLearningModule`` losses, ``backward``, ``clip_grad_norm_`` and Adam steps, one
  member after another (what N single runs cost in one process);
* ``vmap``: ``EnsembleLearner.update`` (``torch.func.vmap`` over ``functional_call`` of the
  template member's TDLoss, per-member clipping, one Adam over the stacked parameters);
* ``bmm``: the same maths written by hand for this MLP with stacked weights and ``baddbmm`` (the
  "batched layers" design: a batched twin of every network part).

Reports the median time of one update of all N members and per member; writes
``benchmark_ensemble.json`` / ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

from fresh_process import measure, publish, serve

B = 64


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rl_lightning import builders
    from rl_lightning.data.buffer import TransitionBatch
    from rl_lightning.ensemble import EnsembleLearner
    from rl_lightning.train import CONFIG_DIR

    n = int(spec["members"])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config")
    members = []
    for seed in range(n):
        pl.seed_everything(seed, verbose=False)
        env = builders.make_env(cfg)
        exploration = instantiate(cfg.exploration)
        q_network = builders.build_q_network(cfg, env, exploration)
        members.append(builders.build_module(cfg, q_network, exploration))
    generator = torch.Generator().manual_seed(0)

    def batch() -> TransitionBatch:
        obs = torch.randn(B, 4, generator=generator)
        return TransitionBatch(
            obs,
            torch.randint(0, 2, (B,), generator=generator),
            torch.ones(B, 1),
            torch.ones(B, dtype=torch.int64),
            torch.zeros(B),
            obs + 0.05 * torch.randn(B, 4, generator=generator),
            torch.randint(0, 2, (B,), generator=generator),
            1000,
        )

    batches = [batch() for _ in range(n)]
    singles = [copy.deepcopy(m) for m in members]
    optimizers = [instantiate(cfg.optim)(m.q_network.parameters()) for m in singles]

    def loop() -> None:
        for module, optimizer, b in zip(singles, optimizers, batches, strict=True):
            loss, _, _ = module.loss(b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.q_network.parameters(), 10.0)
            optimizer.step()

    learner = EnsembleLearner(members)

    def vmapped() -> None:
        learner.update(batches)

    # hand-batched layers: (N, B, in) @ (N, in, out) + (N, 1, out)
    linears = [
        [m for m in s.q_network.modules() if isinstance(m, torch.nn.Linear)] for s in singles
    ]
    weights = [
        torch.stack([ls[i].weight.detach().t() for ls in linears]).requires_grad_()
        for i in range(3)
    ]
    biases = [
        torch.stack([ls[i].bias.detach() for ls in linears]).unsqueeze(1).requires_grad_()
        for i in range(3)
    ]
    target_w = [w.detach().clone() for w in weights]
    target_b = [b.detach().clone() for b in biases]
    params = weights + biases
    optimizer = instantiate(cfg.optim)(params)
    stacked = {
        f: torch.stack([getattr(b, f) for b in batches]) for f in TransitionBatch._fields[:7]
    }

    def forward(ws: list, bs: list, x: Any) -> Any:
        h = torch.relu(torch.baddbmm(bs[0], x, ws[0]))
        h = torch.relu(torch.baddbmm(bs[1], h, ws[1]))
        return torch.baddbmm(bs[2], h, ws[2])

    def bmm() -> None:
        with torch.no_grad():
            best = forward(weights, biases, stacked["next_obs"]).argmax(2, keepdim=True)
            q_t = forward(target_w, target_b, stacked["next_obs"]).gather(2, best).squeeze(2)
            y = stacked["rewards"][..., 0] + 0.98 * (1 - stacked["terminated"]) * q_t
        q = forward(weights, biases, stacked["obs"])
        q_sa = q.gather(2, stacked["actions"].unsqueeze(2)).squeeze(2)
        loss = torch.nn.functional.smooth_l1_loss(q_sa, y, reduction="none").mean(1)
        for p in params:
            p.grad = None
        loss.sum().backward()
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
        coef = torch.clamp(10.0 / (norm + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
        optimizer.step()

    result: dict[str, Any] = {"members": n}
    for name, fn in (("loop", loop), ("vmap", vmapped), ("bmm", bmm)):
        for _ in range(20):
            fn()
        times = []
        for _ in range(int(spec["updates"])):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times) * 1e6
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| members N | loop: µs per update of all (per member) | vmap (EnsembleLearner) | bmm (hand-batched MLP) | vmap vs loop |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        n = r["members"]
        cells = [f"{r[k]:,.0f} ({r[k] / n:,.0f})" for k in ("loop", "vmap", "bmm")]
        lines.append(f"| {n} | {' | '.join(cells)} | {r['loop'] / r['vmap']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", default="1,2,5,10,20", help="ensemble sizes N")
    parser.add_argument("--updates", type=int, default=300, help="timed updates per design")
    parser.add_argument("--out", type=Path, default=Path("."), help="where results go")
    args = parser.parse_args()
    rows = [
        measure(__file__, {"kind": "update", "members": int(n), "updates": args.updates})
        for n in args.members.split(",")
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    publish(args.out, "benchmark_ensemble", {"rows": rows}, markdown(rows))


if __name__ == "__main__":
    if not serve({"update": worker}):
        main()
