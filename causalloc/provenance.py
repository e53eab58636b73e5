"""Where a number came from: the causalloc source commit and the torch build and thread
count a run used.

Two runs of one spec agree bitwise only with the same code, the same torch build on the
same kind of CPU and the same thread count (float reduction order changes with each), so
every run records these (:func:`run_environment`, in the run store and ``design.json``) and
every report prints them. Importing this module imports neither torch nor the stats layer;
:func:`run_environment` imports torch only where it is installed.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
import subprocess
from pathlib import Path

#: the checkout whose commit is recorded: the folder holding the ``causalloc`` package
SOURCE_ROOT = Path(__file__).resolve().parent.parent


#: the distributions a run's numbers depend on (recorded by :func:`run_environment`)
RUN_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "pandas", "statsmodels",
                "pingouin", "ray")


def package_versions(names=RUN_PACKAGES) -> dict[str, str]:
    """Python's version, causalloc's (``__version__`` of this source) and the installed
    version of each named distribution (importlib.metadata, nothing imported; ``not
    installed`` where absent)."""
    from causalloc import __version__

    versions = {"python": platform.python_version(), "causalloc": __version__}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """``git rev-parse HEAD`` of the causalloc checkout, with ``+dirty`` when tracked files
    of the package differ from it; ``unknown`` for an installed (non-git) copy."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    if not (SOURCE_ROOT / ".git").exists():
        return "unknown"
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "causalloc")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def torch_build() -> dict:
    """torch version, CUDA version (None on a CPU build), the CPU kernel capability torch
    dispatches to (e.g. AVX2, AVX512) and the current torch thread count; {} without torch."""
    if importlib.util.find_spec("torch") is None:
        return {}
    import torch

    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine()}


def run_environment() -> dict:
    """What a run's numbers depend on besides its spec: package versions, the source commit
    and the torch build with its thread count (call after the worker set its threads)."""
    return {**package_versions(), "commit": source_commit(), **torch_build()}


def describe_environment(env: dict) -> str:
    """One line for a report: ``causalloc 0.1.0 at 6a551ab, torch 2.13.0+cpu (AVX2), 1 thread``."""
    commit = str(env.get("commit", "unknown"))
    short = commit if commit == "unknown" else commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")
    text = f"causalloc {env.get('causalloc', '?')} at {short}"
    if env.get("torch"):
        build = env.get("cpu_capability") or "?"
        if env.get("cuda"):
            build += f", CUDA {env['cuda']}"
        threads = env.get("torch_threads")
        text += f", torch {env['torch']} ({build})"
        if threads is not None:
            text += f", {threads} thread{'s' if threads != 1 else ''}"
    return text
