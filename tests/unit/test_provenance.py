"""Provenance: what every run and analysis records about the code and build it came from."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from causalloc import __version__
from causalloc.provenance import SOURCE_ROOT, package_versions, run_environment, source_commit


def test_package_versions_names_each_distribution_or_says_it_is_missing():
    versions = package_versions(("numpy", "no-such-distribution-causalloc"))
    assert versions["causalloc"] == __version__
    assert versions["numpy"] == importlib.metadata.version("numpy")
    assert versions["no-such-distribution-causalloc"] == "not installed"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", versions["python"])


def test_source_commit_is_the_checkout_head():
    commit = source_commit()
    if not (SOURCE_ROOT / ".git").exists():
        assert commit == "unknown"
        return
    head = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert commit in (head, f"{head}+dirty")


def test_run_environment_records_build_threads_and_commit():
    environment = run_environment()
    for key in ("causalloc", "torch", "commit", "cpu_capability", "torch_threads", "machine"):
        assert key in environment, key
    assert environment["torch_threads"] >= 1


def test_importing_provenance_imports_no_torch():
    code = ("import sys, causalloc.provenance; "
            "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
