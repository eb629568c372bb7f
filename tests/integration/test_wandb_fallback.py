"""W&B never blocks training: ``logger.mode=online`` without network or login goes offline fast.

Each case runs in a fresh interpreter with a clean W&B environment (a temporary HOME, no API
key, no ``WANDB_MODE``) and a W&B server address that cannot work: a closed port, or a socket
that accepts connections and never answers. The script times the logger set-up the run waits
for (building the loggers and starting the W&B run) and counts the fallback warnings.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rl_lightning import loggers
from rl_lightning.loggers import WANDB_PROBE_TIMEOUT_S, wandb_unavailable_reason
from rl_lightning.summary import read_summary

# Runs train() (or only the logger set-up) with build_loggers timed; prints one JSON line.
SCRIPT = """
import json, logging, sys, time
from pathlib import Path
from hydra import compose, initialize_config_dir
import rl_lightning.train as rl_train
from rl_lightning.loggers import build_loggers, finish_wandb

what, run_dir, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
messages = []
class Collect(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())
logging.getLogger("rl_lightning").addHandler(Collect())
logging.getLogger("rl_lightning").setLevel(logging.INFO)
setup_s = []
with initialize_config_dir(config_dir=rl_train.CONFIG_DIR, version_base="1.3"):
    cfg = compose("config", overrides=overrides)
if what == "train":  # the run logs how long its loggers took to be ready
    rl_train.train(cfg, run_dir=run_dir, overrides=overrides)
    setup_s = [float(m.split()[-2]) for m in messages if m.startswith("loggers ready in")]
    messages = [m for m in messages if not m.startswith(("loggers ready", "checkpoints:"))]
else:
    start = time.perf_counter()
    for logger in build_loggers(cfg.logger, run_dir=run_dir, config={}, overrides=overrides):
        logger.experiment  # wandb.init: the set-up the run waits for
    setup_s.append(time.perf_counter() - start)
    finish_wandb()
print(json.dumps({"setup_s": setup_s, "messages": messages}))
"""

ONLINE = ["logger=wandb", "logger.mode=online", "debug=fast", "eval.every_env_steps=0"]


def run_script(what: str, run_dir: Path, home: Path, base_url: str, *, api_key: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    env.update(HOME=str(home), WANDB_BASE_URL=base_url, WANDB_SILENT="true")
    if api_key:
        env["WANDB_API_KEY"] = api_key
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, what, str(run_dir), *ONLINE],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=home,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wandb_records(path: Path) -> Iterator:
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log of 32 KiB blocks: a
    7-byte file header, then records with a 7-byte header -- CRC, length, type -- that may be
    split over blocks: type 1 whole, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, header = 32 * 1024, 7
    pos, parts = header, b""
    while pos + header <= len(data):
        if block - pos % block < header:  # too little room left for a header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if kind == 0 and length == 0:
            break
        parts += data[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def offline_history(run_dir: Path) -> dict[str, list[float]]:
    """Every metric logged to the one offline W&B run under ``run_dir``, in logging order."""
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history: dict[str, list[float]] = {}
    for record in wandb_records(runs[0]):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(json.loads(item.value_json))
    return history


def fallback_warnings(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("W&B online is unavailable")]


def test_online_without_network_trains_offline(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # logged in (a key), but nothing listens on port 9: the connection is refused
    out = run_script("train", run_dir, tmp_path, "http://127.0.0.1:9", api_key="k" * 40)
    assert len(out["setup_s"]) == 1 and out["setup_s"][0] < 10.0
    (warning,) = fallback_warnings(out["messages"])  # said once
    assert "http://127.0.0.1:9 is not reachable" in warning and str(run_dir) in warning

    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["env_steps"] == 300
    history = offline_history(run_dir)
    # the run is stored offline: train metrics and the final evaluation of summary.json
    assert len(history["train/loss"]) >= 1
    assert history["eval/return_mean"][-1] == pytest.approx(summary["eval_return_mean"])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A W&B address that accepts TCP connections and never answers (a stalled network)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def answering_server() -> Iterator[str]:
    """A W&B address that answers every request with HTTP 404."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No W&B credentials: no key variables, a HOME without ``.netrc``."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_no_login_is_found_without_touching_the_network(no_login: Path) -> None:
    start = time.perf_counter()
    reason = wandb_unavailable_reason("http://127.0.0.1:9")
    assert time.perf_counter() - start < 1.0
    assert reason is not None and reason.startswith("no W&B login for http://127.0.0.1:9")


def test_a_netrc_login_counts(no_login: Path, answering_server: str) -> None:
    assert wandb_unavailable_reason(answering_server).startswith("no W&B login")  # type: ignore[union-attr]
    host = answering_server.removeprefix("http://")
    (no_login / ".netrc").write_text(f"machine {host}\n  login user\n  password {'k' * 40}\n")
    assert wandb_unavailable_reason(answering_server) is None  # logged in, and it answers


def test_an_answering_server_is_reachable(answering_server: str) -> None:
    assert wandb_unavailable_reason(answering_server, settings_api_key="k" * 40) is None


def test_a_closed_port_is_unreachable_at_once() -> None:
    start = time.perf_counter()
    reason = wandb_unavailable_reason("http://127.0.0.1:9", settings_api_key="k" * 40)
    assert time.perf_counter() - start < 1.0
    assert reason is not None and reason.startswith("http://127.0.0.1:9 is not reachable (")


def test_a_silent_server_is_given_up_after_the_timeout(silent_server: str) -> None:
    start = time.perf_counter()
    reason = wandb_unavailable_reason(silent_server, settings_api_key="k" * 40, timeout_s=0.5)
    assert 0.5 <= time.perf_counter() - start < 1.5
    assert reason == f"{silent_server} did not answer within 0.5 s"


def test_the_fallback_is_said_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Jobs of a sweep after the first go offline at once, without probing or warning again."""
    probes = []

    def no_network(base_url: str, **kwargs: object) -> str:
        probes.append(base_url)
        return f"{base_url} is not reachable (no route)"

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(loggers, "wandb_unavailable_reason", no_network)
    monkeypatch.setattr(loggers, "_wandb_offline_reason", None)
    with caplog.at_level(logging.WARNING, logger="rl_lightning"):
        built = [
            loggers.online_wandb_logger({"save_dir": str(tmp_path / str(job)), "mode": "online"})
            for job in range(3)
        ]
    assert len(probes) == 1
    assert len(fallback_warnings([r.getMessage() for r in caplog.records])) == 1
    for logger in built:  # not started: wandb.init would run only when training logs
        assert logger._wandb_init["mode"] == "offline"


@pytest.mark.slow
def test_online_with_a_silent_server_and_no_login_starts_offline_in_time(
    tmp_path: Path, silent_server: str
) -> None:
    """The whole set-up path in a fresh process: no login, then (with a key) no answer."""
    out = run_script("setup", tmp_path / "a", tmp_path, silent_server)
    (warning,) = fallback_warnings(out["messages"])
    assert warning.startswith(f"W&B online is unavailable: no W&B login for {silent_server}")
    assert out["setup_s"][0] < 10.0

    out = run_script("setup", tmp_path / "b", tmp_path, silent_server, api_key="k" * 40)
    (setup_s,) = out["setup_s"]
    assert WANDB_PROBE_TIMEOUT_S <= setup_s < 10.0
    (warning,) = fallback_warnings(out["messages"])
    assert f"{silent_server} did not answer within {WANDB_PROBE_TIMEOUT_S:g} s" in warning
    assert list((tmp_path / "b" / "wandb").glob("offline-run-*/run-*.wandb"))
