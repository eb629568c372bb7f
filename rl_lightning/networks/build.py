"""The Q-network of an ``arch`` config node, with the runtime facts filled in.

``arch`` names a network class with ``_target_``. Its children that are ``_target_`` nodes
themselves (``arch.encoder``, ``arch.head``) are its *parts*: each is instantiated as a
``_partial_`` factory and handed to the network, which calls it with the facts only it knows
(the encoder's input shape, the head's input width). So ``conf/arch/mlp.yaml`` is

    defaults:
      - encoder: mlp       # conf/arch/encoder/mlp.yaml -> arch.encoder
      - head: linear       # conf/arch/head/linear.yaml -> arch.head
    _target_: rl_lightning.networks.ActionOutQNetwork

and ``rl-train arch/head=dueling arch.encoder.hidden_sizes=[64,64]`` swaps the head and resizes
the encoder. Networks without parts (``tabular``, ``linear``) are built whole, as before.

Runtime facts are never written in YAML: ``obs_shape`` and ``num_actions`` go to the network,
the observation bounds (``obs_low``, ``obs_high``; computed only if some part declares them) to
every part that declares them, the discounted return's bounds to a ``v_min``/``v_max`` left
null (a distributional head's support), and each of the exploration's ``overrides`` (``noisy=True``,
``dropout=p``) to every part that declares that parameter -- a ``ValueError`` if none does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

#: children of ``arch`` that name a part by config node, never by a string
PART_KEYS = ("encoder", "head")


def _is_part(value: Any) -> bool:
    return isinstance(value, DictConfig) and "_target_" in value


def part_problems(arch: DictConfig) -> list[str]:
    """One message per part chosen by a string (``arch.head=dueling``) where the network takes
    a part (a config node, chosen with ``arch/head=dueling``). ``validation`` reports these
    before anything is built. (``MLPQNetwork``'s ``head: str`` is a string by design.)"""
    return [
        f"arch.{key}={arch[key]!r} is not a config node: choose the {key} with arch/{key}=NAME "
        f"(conf/arch/{key}/NAME.yaml) and set its options with arch.{key}.OPTION=VALUE"
        for key in PART_KEYS
        if key in arch and not _is_part(arch[key]) and _takes_a_part(arch.get("_target_"), key)
    ]


def _takes_a_part(target: Any, key: str) -> bool:
    """Whether ``target`` has a parameter ``key`` that is not annotated as a string."""
    try:
        parameter = inspect.signature(get_object(target), eval_str=True).parameters.get(key)
    except Exception:  # no target, or not importable: instantiate reports it
        return False
    return parameter is not None and parameter.annotation is not str


#: the MLP keys an action-in ``arch`` held before ``arch.encoder`` (configs stored in checkpoints)
_FLAT_ACTION_IN_KEYS = ("hidden_sizes", "activation", "dropout", "norm")


def _nest_flat_action_in(arch: DictConfig) -> DictConfig:
    """An action-in ``arch`` written before it had an ``encoder`` node (the config stored in an
    older checkpoint, read by ``rl-eval``/``rl-embed``) with its MLP keys moved into one; other
    nodes as they are. (Old ``MLPQNetwork`` configs need nothing: the class still takes them.)"""
    if not str(arch.get("_target_", "")).endswith(".ActionInQNetwork") or "encoder" in arch:
        return arch
    flat = cast(dict[str, Any], OmegaConf.to_container(arch, resolve=True))
    encoder = {k: flat.pop(k) for k in _FLAT_ACTION_IN_KEYS if k in flat}
    encoder.update(_target_="rl_lightning.networks.MLPEncoder", noisy=flat.get("noisy", False))
    return OmegaConf.create({**flat, "encoder": encoder})


def _declared(target: str) -> set[str]:
    """The keyword parameters that ``target`` (a class or function) declares by name."""
    parameters = inspect.signature(get_object(target)).parameters.values()
    return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build_q_network(
    arch: DictConfig,
    *,
    obs_shape: tuple[int, ...],
    num_actions: int,
    obs_bounds: Callable[[], tuple[list[float], list[float]]],
    overrides: Mapping[str, Any],
    return_bounds: Callable[[], tuple[float, float]] | None = None,
) -> nn.Module:
    """Build ``arch`` (see the module docstring) with its parts, encoder then head.

    Args:
        arch: the composed ``arch`` node.
        obs_shape, num_actions: the env's observation shape and number of actions.
        obs_bounds: ``() -> (low, high)`` per observation dimension; called only when a part
            declares ``obs_low``/``obs_high`` (it fails for unbounded observations).
        overrides: what the exploration needs of the network (``network_overrides``).
        return_bounds: ``() -> (low, high)`` of the discounted return; called only when a part
            leaves ``v_min`` or ``v_max`` null (a distributional head's default support).

    Raises:
        ValueError: an override no part declares, or a part chosen by a string
            (``arch.head=dueling`` instead of ``arch/head=dueling``).
    """
    arch = _nest_flat_action_in(arch)
    problems = part_problems(arch)
    if problems:
        raise ValueError("; ".join(problems))
    parts: dict[str, DictConfig] = {str(k): arch[k] for k in arch if _is_part(arch[k])}
    nodes: dict[str, DictConfig] = {"": arch, **parts}
    declared = {name: _declared(node._target_) for name, node in nodes.items()}
    unsupported = [k for k in overrides if not any(k in names for names in declared.values())]
    if unsupported:
        what = ", ".join(f"arch{'.' + n if n else ''}: {nodes[n]._target_}" for n in nodes)
        raise ValueError(
            f"the exploration needs {unsupported} in the network, which no part of it declares "
            f"({what}); use arch=mlp or arch=mlp_action_in"
        )
    bounds: dict[str, list[float]] = {}
    if any({"obs_low", "obs_high"} & names for names in declared.values()):
        bounds["obs_low"], bounds["obs_high"] = obs_bounds()

    def extras(name: str) -> dict[str, Any]:
        """The bounds and overrides that the node ``name`` declares, and the return bounds for
        its ``v_min``/``v_max`` left null."""
        given = {**bounds, **overrides}
        chosen = {k: v for k, v in given.items() if k in declared[name]}
        null = [k for k in ("v_min", "v_max") if k in nodes[name] and nodes[name][k] is None]
        if null and return_bounds is not None:
            low, high = return_bounds()
            chosen.update((k, v) for k, v in (("v_min", low), ("v_max", high)) if k in null)
        return chosen

    factories = {
        name: instantiate(node, _partial_=True, **extras(name)) for name, node in parts.items()
    }
    whole = cast(dict[str, Any], OmegaConf.to_container(arch, resolve=True))
    for name in parts:
        del whole[name]
    facts = {"obs_shape": tuple(obs_shape), "num_actions": num_actions}
    facts = {k: v for k, v in facts.items() if k in declared[""]}
    network = instantiate(whole, _partial_=True, **facts, **extras(""))
    return cast(nn.Module, network(**factories))
