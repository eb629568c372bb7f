"""Metric loggers from the ``logger/`` config group; every curve's x-axis is the env step."""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

KINDS = ("wandb", "csv", "tensorboard", "none")

log = logging.getLogger("rl_lightning")


def run_group(overrides: list[str]) -> str:
    """The W&B group of a run: its command-line overrides without the seed, sorted.

    Seeds of one setting fall into one group; the default setting is called ``default``.
    """
    kept = sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed")
    return ",".join(kept) or "default"


def build_loggers(
    cfg: Any,
    *,
    run_dir: Path,
    config: dict,
    overrides: list[str],
    wandb_id: str | None = None,
    purge_step: int | None = None,
) -> list[Logger]:
    """Loggers for ``cfg`` (the ``logger`` node), writing under ``run_dir``.

    A resumed run passes the W&B run id (the run continues in place, ``resume="allow"``) and
    the env step of its checkpoint (TensorBoard drops the killed session's events from there
    on, ``purge_step``; CSV: ``checkpointing.continue_csv_log``).
    """
    kind = cfg.kind
    if kind == "none":
        return []
    if kind == "csv":
        return [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if kind == "tensorboard":
        return [
            TensorBoardLogger(
                save_dir=str(run_dir),
                name="tensorboard",
                version="",
                default_hp_metric=False,
                purge_step=purge_step,
            )
        ]
    if kind == "wandb":
        if cfg.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={cfg.mode!r} is not one of offline, online, disabled")
        wandb_kwargs: dict[str, Any] = dict(
            save_dir=str(run_dir),
            **wandb_run_names(cfg, overrides),
            config=config,
            offline=cfg.mode == "offline",
            mode=None if cfg.mode == "offline" else cfg.mode,
            log_model=False,
            id=wandb_id,
            resume="allow" if wandb_id is not None else None,
        )
        if cfg.mode == "online":
            return [online_wandb_logger(wandb_kwargs)]
        return [wandb_logger(**wandb_kwargs)]
    raise ValueError(f"logger.kind={kind!r} is not one of {KINDS}")


def wandb_run_names(cfg: Any, overrides: list[str]) -> dict[str, Any]:
    """Where a run goes in W&B: ``logger.project``, ``entity``, ``job_type``, ``tags`` and the
    group (``logger.group``, else the overrides without the seed: ``run_group``)."""
    return dict(
        project=cfg.project,
        entity=cfg.entity,
        group=cfg.group or run_group(overrides),
        job_type=cfg.job_type,
        tags=list(cfg.tags),
    )


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """Lightning's ``WandbLogger(**kwargs)``, without its ``anonymous`` argument to ``wandb.init``.

    Lightning passes ``anonymous=None`` to ``wandb.init`` unless told otherwise; wandb >= 0.23
    dropped anonymous mode and warns "The anonymous setting has no effect" for any value that is
    passed, None included (wandb/wandb#10909). Leaving the key out gives wandb's own default,
    on old and new wandb alike. Building the logger does not import wandb (``wandb.init`` runs
    at the first use of ``logger.experiment``).
    """
    logger = WandbLogger(**kwargs)
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous", "") is None:
        del init_kwargs["anonymous"]
    return logger


# W&B must never hold training up: `logger.mode=online` without a login or without a reachable
# server falls back to offline (the run can be uploaded later with `wandb sync`). Both checks
# take at most WANDB_PROBE_TIMEOUT_S; wandb's own behaviour would be a prompt for a key, or a
# failed run after its 90 s init timeout.
WANDB_PROBE_TIMEOUT_S = 3.0
# a server that answers the probe but stalls during wandb.init (wandb's default is 90 s); wandb
# also spends up to about 10 s identifying the user first
WANDB_INIT_TIMEOUT_S = 30.0
_wandb_offline_reason: str | None = None  # set once per process: later jobs skip the probes


def online_wandb_logger(wandb_kwargs: dict[str, Any]) -> WandbLogger:
    """A started online ``WandbLogger``, or an offline one if W&B cannot be reached.

    Checks first, in at most ``WANDB_PROBE_TIMEOUT_S``, that there is a login (an API key in
    the environment, wandb's settings or ``.netrc``) and that the server answers; then starts
    the run at once (``wandb.init`` with ``WANDB_INIT_TIMEOUT_S``) so that a rejected key or a
    stalled server shows here and not in the middle of training. Any failure gives an offline
    run and one warning per process.
    """
    global _wandb_offline_reason
    forced = os.environ.get("WANDB_MODE", "").lower()
    if forced in ("offline", "dryrun", "disabled"):  # the environment already overrides online
        return wandb_logger(**wandb_kwargs)
    import wandb

    settings = wandb.setup().settings  # the server and key wandb.init would use
    reason = _wandb_offline_reason or wandb_unavailable_reason(
        str(settings.base_url), settings_api_key=settings.api_key
    )
    if reason is None:
        logger = wandb_logger(
            **wandb_kwargs, settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S)
        )
        try:
            _ = logger.experiment  # wandb.init, on rank zero only
            return logger
        except Exception as exc:  # any wandb.init failure: the run goes on offline
            reason = f"wandb.init failed ({type(exc).__name__}: {exc})"
    # mode="offline" for wandb.init itself: Lightning's offline switch (the WANDB_MODE variable)
    # comes too late once the probe has loaded wandb's settings
    offline = wandb_logger(**{**wandb_kwargs, "offline": True, "mode": "offline"})
    if _wandb_offline_reason is None:
        log.warning(
            "W&B online is unavailable: %s. Logging offline instead, under %s/wandb/offline-run-*"
            " (upload later with `wandb sync`).",
            reason,
            wandb_kwargs["save_dir"],
        )
        _wandb_offline_reason = reason
    return offline


def wandb_unavailable_reason(
    base_url: str,
    *,
    settings_api_key: str | None = None,
    timeout_s: float = WANDB_PROBE_TIMEOUT_S,
) -> str | None:
    """Why an online W&B run at ``base_url`` cannot start here (no login, no answer), or None.

    Any HTTP answer counts as reachable; a refused connection, a failed name lookup or no
    answer within ``timeout_s`` does not (the probe runs in a thread: name lookups have no
    timeout of their own).
    """
    if not _has_wandb_login(base_url, settings_api_key):
        return (
            f"no W&B login for {base_url} (no WANDB_API_KEY, no key in wandb's settings or "
            "~/.netrc; run `wandb login`)"
        )
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            # the socket timeout outlasts the wait below: a silent server reads "did not answer"
            urllib.request.urlopen(base_url, timeout=timeout_s + 1.0).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # the server answered
            outcome.append(None)
        except urllib.error.URLError as exc:
            reachable = isinstance(exc.reason, ssl.SSLError)
            outcome.append(None if reachable else f"{exc.reason}")
        except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"{base_url} did not answer within {timeout_s:g} s"
    if outcome[0] is not None:
        return f"{base_url} is not reachable ({outcome[0]})"
    return None


def _has_wandb_login(base_url: str, settings_api_key: str | None) -> bool:
    """Whether wandb has credentials for ``base_url``: the same sources ``wandb.init`` reads."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    if settings_api_key:
        return True
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return read_netrc_auth(host=base_url) is not None
    except Exception:  # another wandb version or a malformed .netrc: let wandb.init decide
        return True


def finish_wandb() -> None:
    """Close the current W&B run (Lightning does not; multirun jobs would share one run).

    A process that never imported wandb has no run: wandb is not imported here for nothing
    (a ``logger=csv`` run never loads it).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
