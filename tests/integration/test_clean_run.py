"""What a plain ``rl-train`` run loads and prints: no W&B, matplotlib or scikit-learn it does not
use, no W&B deprecation warning, and a ``--help`` of its own.

Each test starts ``rl-train`` in a fresh interpreter: ``sys.modules`` of the test process holds
whatever earlier tests imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rl_lightning.train import CONFIG_DIR

# Runs rl-train's console-script entry point (``rl_lightning.train:main``) with the arguments
# after ``-c``, and prints one JSON line at exit (atexit: Hydra ends with sys.exit):
#   loaded_by: for each of the packages below that got imported, the module whose import
#       statement loaded it first (the innermost frame outside importlib and the package);
#   imported_from_rl_lightning: rl_lightning modules that executed an import of one of them
#       (also once it is loaded: a later import statement never reaches the loader again);
#   modules: the packages among them in sys.modules at exit.
PROBE = r"""
import atexit, builtins, json, sys
WATCHED = ("wandb", "matplotlib", "sklearn")
loaded_by, from_rl = {}, set()
_import = builtins.__import__

def importer(top):
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.partition(".")[0] not in (top, "importlib", "__main__"):
            return name
        frame = frame.f_back
    return "?"

def watching_import(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.partition(".")[0]
    if level == 0 and top in WATCHED:
        if top not in sys.modules and top not in loaded_by:
            loaded_by[top] = importer(top)
        caller = (globals or {}).get("__name__") or ""
        if caller.partition(".")[0] == "rl_lightning":
            from_rl.add(caller)
    return _import(name, globals, locals, fromlist, level)

builtins.__import__ = watching_import

@atexit.register
def report():
    modules = sorted({m.partition(".")[0] for m in sys.modules} & set(WATCHED))
    print("PROBE " + json.dumps({"loaded_by": loaded_by, "modules": modules,
                                 "imported_from_rl_lightning": sorted(from_rl)}), flush=True)

sys.argv = ["rl-train", *sys.argv[1:]]
from rl_lightning.train import main
main()
"""


def run_rl_train(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **env},
        timeout=300,
        check=False,
    )


def probe(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


def test_a_csv_run_imports_no_wandb_sklearn_or_matplotlib_of_its_own(tmp_path: Path) -> None:
    proc = run_rl_train(["debug=fast", "logger=csv", f"hydra.run.dir={tmp_path}"])
    seen = probe(proc)
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # the run did log, through CSV
    assert "wandb" not in seen["modules"]  # W&B loads only for logger=wandb
    assert "sklearn" not in seen["modules"]  # t-SNE loads only for embedding.enabled=true
    assert seen["imported_from_rl_lightning"] == []
    # Lightning imports torchmetrics, which imports matplotlib.pyplot whenever matplotlib is
    # installed (torchmetrics.utilities.plot): that one is Lightning's, not rl-lightning's
    if "matplotlib" in seen["modules"]:
        assert seen["loaded_by"]["matplotlib"].startswith("torchmetrics."), seen["loaded_by"]


def test_a_wandb_run_prints_no_anonymous_setting_warning(tmp_path: Path) -> None:
    # the default logger: W&B offline; Lightning's WandbLogger passes anonymous=None to
    # wandb.init, which wandb >= 0.23 warns about (rl_lightning.loggers.wandb_logger drops it)
    proc = run_rl_train(["debug=fast", f"hydra.run.dir={tmp_path}"], WANDB_SILENT="false")
    seen = probe(proc)
    assert "wandb" in seen["modules"]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no W&B run was written"
    output = proc.stdout + proc.stderr
    assert "anonymous" not in output.lower(), output[-3000:]


def test_help_is_rl_trains_own() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rl_lightning.train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("rl-train: train a value-based agent")
    assert "powered by Hydra" not in proc.stdout
    # every config group with its options, as the files under conf/ list them
    conf = Path(CONFIG_DIR)
    groups = {
        path.parent.relative_to(conf).as_posix()
        for path in conf.rglob("*.yaml")
        if path.parent != conf and path.parent.relative_to(conf).parts[0] != "hydra"
    }
    for group in sorted(groups):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in lines, group
    assert "rl-train debug=fast logger=csv" in proc.stdout  # the examples
    assert "README.md" in proc.stdout  # where to read on
