"""Pinned testbeds: one file holding a built testbed, so that runs can be repeated on exactly
the weights a report was made on.

Training is chaotic: the same testbed config built on another processor (other float
kernels) gives another theta_o (issue 19: weights 0.17 apart after 300 Adam steps even in
float64), so a report can only be rerun elsewhere on its *file*. A testbed file is a gzip tar
archive of the built folder (``theta_o/``, ``theta_r/`` as safetensors, ``tokenizer/``,
``v_tgt.json``, ``data.json`` and the record ``testbed.json``) headed by ``manifest.json``::

    {"format": "causalloc-testbed", "version": 1, "hash": <config hash>,
     "theta_o_fingerprint": <sha256 of theta_o's weights>,
     "files": {<relative path>: {"sha256": ..., "size": ...}, ...}}

A shared file is untrusted input, so import (:func:`import_testbed`) reads it member by
member instead of calling ``tarfile.extractall``: only regular files that the manifest lists,
with relative names that stay inside the target folder and an allowed suffix (no pickle: the
weights are safetensors, everything else JSON or text), each checked against its sha256 and
size while it is written; then theta_o's weights are fingerprinted again and compared with the
record. Any failure names the file and the member at fault and leaves nothing behind.

Imported testbeds live in ``<cache>/testbeds/pinned/<fingerprint[:16]>``, apart from the
testbeds built here (``<cache>/testbeds/<hash[:16]>``): an import never replaces a local
build of the same config, which on this processor is another instance.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from causalloc.errors import DataError
from causalloc.testbed import ITEM_ES_FILE, Testbed, default_cache_dir, load_testbed

FORMAT = "causalloc-testbed"
VERSION = 1
MANIFEST = "manifest.json"
#: suffixes a testbed file may hold: safetensors weights, JSON records and configs, text
ALLOWED_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja")
#: what every testbed file must hold (besides the weights' and tokenizer's own files)
REQUIRED = ("testbed.json", "v_tgt.json", "data.json", "theta_o/config.json", "theta_r/config.json")
PINNED = "pinned"
_CHUNK = 1 << 20


def pinned_dir(cache_dir: str | Path | None = None) -> Path:
    """Where imported testbeds live: ``<cache>/testbeds/pinned``."""
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / PINNED


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record(folder: Path) -> dict:
    return json.loads((folder / "testbed.json").read_text())


def find_testbed(key: str, cache_dir: str | Path | None = None) -> Path:
    """The built or imported testbed folder whose config hash or theta_o fingerprint starts
    with ``key`` (at least 8 hex digits); DataError when none or several match."""
    key = key.strip().lower()
    if len(key) < 8 or any(c not in "0123456789abcdef" for c in key):
        raise DataError(f"testbed {key!r}: give at least 8 hex digits of its hash or theta_o fingerprint")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    candidates = [*root.glob("*/testbed.json"), *(root / PINNED).glob("*/testbed.json")]
    matches = []
    for meta_file in candidates:
        record = json.loads(meta_file.read_text())
        fingerprint = record.get("theta_o_fingerprint") or ""
        if record.get("hash", "").startswith(key) or fingerprint.startswith(key):
            matches.append(meta_file.parent)
    if not matches:
        raise DataError(f"testbed {key!r}: no built or imported testbed under {root} has that hash or "
                        "theta_o fingerprint (causalloc testbed build, or causalloc testbed import FILE)")
    if len(matches) > 1:
        raise DataError(f"testbed {key!r}: several testbeds match ({', '.join(map(str, matches))}); "
                        "give more digits")
    return matches[0]


def export_testbed(folder: str | Path, out: str | Path) -> dict:
    """Write the built testbed in ``folder`` to the testbed file ``out``; returns its manifest.

    An existing ``out`` is not overwritten (DataError): a published file is evidence."""
    folder, out = Path(folder), Path(out)
    if out.exists():
        raise DataError(f"{out}: exists; a testbed file is never overwritten (remove it or choose another name)")
    testbed = load_testbed(folder)
    fingerprint = testbed.theta_o_fingerprint
    record = _record(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name.startswith(".") or "/." in name:
            continue  # staging files of an interrupted record update
        if not name.endswith(ALLOWED_SUFFIXES):
            raise DataError(f"{path}: a testbed file holds only {', '.join(ALLOWED_SUFFIXES)} files")
        files[name] = {"sha256": _sha256_file(path), "size": path.stat().st_size}
    manifest = {"format": FORMAT, "version": VERSION, "hash": record["hash"],
                "theta_o_fingerprint": fingerprint, "kind": record["config"]["kind"], "files": files}
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.{os.getpid()}")
    with tarfile.open(staged, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        for name in files:
            info = tarfile.TarInfo(name)
            info.size = files[name]["size"]
            info.mode = 0o644
            with open(folder / name, "rb") as handle:
                tar.addfile(info, handle)
    os.replace(staged, out)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _open(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise DataError(f"{path}: no such testbed file")
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a causalloc testbed file (not a gzip tar archive: {exc})") from None


def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict:
    try:
        member = tar.getmember(MANIFEST)
        manifest = json.loads(tar.extractfile(member).read())
    except KeyError:
        raise DataError(f"{path}: not a causalloc testbed file ({MANIFEST} missing)") from None
    except (tarfile.TarError, OSError, EOFError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: damaged testbed file ({MANIFEST} unreadable: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a causalloc testbed file ({MANIFEST} has no format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: testbed file version {manifest.get('version')!r}; this causalloc reads "
                        f"version {VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("theta_o_fingerprint"), str):
        raise DataError(f"{path}: damaged testbed file ({MANIFEST} lacks 'files' or 'theta_o_fingerprint')")
    for name in files:
        _check_name(name, path)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise DataError(f"{path}: not a complete testbed file ({', '.join(missing)} missing)")
    return manifest


def _check_name(name: str, path: Path) -> None:
    """A member name must be a plain relative path inside the target folder with an allowed suffix."""
    pure = PurePosixPath(name)
    if (not name or "\\" in name or pure.is_absolute() or any(part in ("", ".", "..") for part in name.split("/"))
            or name.startswith("~")):
        raise DataError(f"{path}: member {name!r} would land outside the testbed folder; refused")
    if not name.endswith(ALLOWED_SUFFIXES):
        raise DataError(f"{path}: member {name!r} is not an allowed kind of file "
                        f"({', '.join(ALLOWED_SUFFIXES)}); refused")


def read_manifest(path: str | Path) -> dict:
    """The manifest of a testbed file (checked for form, not yet for content)."""
    path = Path(path)
    with _open(path) as tar:
        return _read_manifest(tar, path)


def read_record(path: str | Path) -> dict:
    """The record (``testbed.json``: config, hash, diagnostics, fingerprint) inside a testbed
    file, checked against its manifest checksum; reads no weights."""
    path = Path(path)
    with _open(path) as tar:
        manifest = _read_manifest(tar, path)
        try:
            data = tar.extractfile(tar.getmember("testbed.json")).read()
        except (KeyError, tarfile.TarError, OSError, EOFError, AttributeError) as exc:
            raise DataError(f"{path}: damaged testbed file (testbed.json unreadable: {exc})") from None
    if hashlib.sha256(data).hexdigest() != manifest["files"]["testbed.json"]["sha256"]:
        raise DataError(f"{path}: damaged testbed file (testbed.json does not match its checksum)")
    record = json.loads(data)
    if record.get("theta_o_fingerprint") != manifest["theta_o_fingerprint"]:
        raise DataError(f"{path}: damaged testbed file (record and manifest name different theta_o fingerprints)")
    return record


def import_testbed(path: str | Path, cache_dir: str | Path | None = None) -> Testbed:
    """Import a testbed file into ``<cache>/testbeds/pinned/<fingerprint[:16]>`` (or reuse the
    same testbed imported before) and return it; DataError for a foreign or damaged file."""
    path = Path(path)
    with _open(path) as tar:
        manifest = _read_manifest(tar, path)
        fingerprint = manifest["theta_o_fingerprint"]
        target = pinned_dir(cache_dir) / fingerprint[:16]
        if (target / "testbed.json").exists():
            if _record(target).get("theta_o_fingerprint") != fingerprint:
                raise DataError(f"{target}: holds another testbed than {path} (fingerprint prefix clash); "
                                "remove that folder")
            return load_testbed(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".import-{target.name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            _extract_checked(tar, manifest, staging, path)
            _verify_weights(staging, fingerprint, path)
            # the build's record of ES per item feeds every run's step-0 scores, and nothing
            # checks it against the weights: from a file, runs compute those scores themselves
            (staging / ITEM_ES_FILE).unlink(missing_ok=True)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return load_testbed(target)


def _extract_checked(tar: tarfile.TarFile, manifest: dict, staging: Path, path: Path) -> None:
    files = manifest["files"]
    seen = set()
    root = staging.resolve()
    for member in tar:
        if member.name == MANIFEST:
            continue
        if member.isdir():
            continue
        _check_name(member.name, path)
        if not member.isfile():
            raise DataError(f"{path}: member {member.name!r} is a link or special file; refused")
        if member.name not in files:
            raise DataError(f"{path}: member {member.name!r} is not in the manifest; refused")
        if member.name in seen:
            raise DataError(f"{path}: member {member.name!r} appears twice; refused")
        seen.add(member.name)
        destination = (staging / member.name).resolve()
        if root not in destination.parents:
            raise DataError(f"{path}: member {member.name!r} would land outside the testbed folder; refused")
        destination.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            source = tar.extractfile(member)
            with open(destination, "wb") as handle:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: damaged testbed file (member {member.name!r} unreadable: {exc})") from None
        expected = files[member.name]
        if size != expected.get("size") or digest.hexdigest() != expected.get("sha256"):
            raise DataError(f"{path}: damaged testbed file (member {member.name!r} does not match its "
                            "manifest checksum)")
    missing = sorted(set(files) - seen)
    if missing:
        raise DataError(f"{path}: damaged testbed file ({', '.join(missing[:5])} listed in the manifest but absent)")


def _verify_weights(staging: Path, fingerprint: str, path: Path) -> None:
    from causalloc.models.weights import weights_fingerprint

    record = _record(staging)
    if record.get("theta_o_fingerprint") != fingerprint:
        raise DataError(f"{path}: damaged testbed file (record and manifest name different theta_o fingerprints)")
    actual = weights_fingerprint(staging / "theta_o")
    if actual != fingerprint:
        raise DataError(f"{path}: damaged testbed file (theta_o's weights have fingerprint {actual[:16]}..., "
                        f"the record says {fingerprint[:16]}...)")


def pinned_testbed(fingerprint: str, cache_dir: str | Path | None = None) -> Testbed:
    """The imported testbed with this theta_o fingerprint (DataError naming the remedy if absent)."""
    target = pinned_dir(cache_dir) / fingerprint[:16]
    if not (target / "testbed.json").exists() or _record(target).get("theta_o_fingerprint") != fingerprint:
        raise DataError(f"pinned testbed {fingerprint[:16]}...: not imported into {target.parent} "
                        "(causalloc testbed import FILE, or run the spec that names the file)")
    return load_testbed(target)


__all__ = ["export_testbed", "find_testbed", "import_testbed", "pinned_testbed", "read_manifest",
           "read_record"]
