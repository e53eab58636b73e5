"""Pinned testbed files (causalloc.testbed_file, `causalloc testbed export/import`): a round
trip keeps every byte, and a damaged, foreign or malicious file is refused with the reason and
leaves nothing behind. The committed file of the regression report is the fixture."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from causalloc.cli import main
from causalloc.errors import DataError, SpecError
from causalloc.testbed_file import (
    MANIFEST,
    export_testbed,
    find_testbed,
    import_testbed,
    read_record,
)
from tests.runs_helpers import parse

ROOT = Path(__file__).resolve().parents[2]
PINNED = ROOT / "reports" / "regression" / "testbed.tgz"


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def write_archive(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def imported_nothing(cache: Path) -> bool:
    pinned = cache / "testbeds" / "pinned"
    return not pinned.exists() or not any(pinned.iterdir())


def test_round_trip_keeps_every_file_and_the_fingerprint(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["testbed", "import", str(PINNED), "--cache-dir", str(cache / "testbeds"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    testbed = import_testbed(PINNED, cache / "testbeds")  # a second import reuses the first
    assert str(testbed.path) == record["path"] and testbed.theta_o_fingerprint == record["theta_o_fingerprint"]
    assert find_testbed(record["theta_o_fingerprint"][:12], cache / "testbeds") == testbed.path
    out = tmp_path / "again.tgz"
    assert main(["testbed", "export", record["hash"][:10], "--out", str(out),
                 "--cache-dir", str(cache / "testbeds")]) == 0
    assert members(out) == members(PINNED)
    with pytest.raises(DataError, match="never overwritten"):
        export_testbed(testbed.path, out)
    assert read_record(out)["theta_o_fingerprint"] == testbed.theta_o_fingerprint


def test_a_damaged_weight_file_is_refused_and_nothing_is_left(tmp_path):
    files = members(PINNED)
    weights = bytearray(files["theta_o/model.safetensors"])
    weights[-10] ^= 0xFF
    files["theta_o/model.safetensors"] = bytes(weights)
    bad = write_archive(tmp_path / "bad.tgz", files)
    with pytest.raises(DataError, match=r"bad.tgz: damaged testbed file \(member 'theta_o/model.safetensors' "
                                        r"does not match its manifest checksum\)"):
        import_testbed(bad, tmp_path / "cache")
    assert imported_nothing(tmp_path)
    assert not list((tmp_path / "cache").glob("pinned/.import-*"))


def test_a_consistent_forgery_is_caught_by_the_weights_fingerprint(tmp_path):
    """Changing the weights and their manifest checksum together still fails: the theta_o
    fingerprint in the record is recomputed from the weights."""
    import hashlib

    files = members(PINNED)
    weights = bytearray(files["theta_o/model.safetensors"])
    weights[-10] ^= 0xFF
    files["theta_o/model.safetensors"] = bytes(weights)
    manifest = json.loads(files[MANIFEST])
    manifest["files"]["theta_o/model.safetensors"]["sha256"] = hashlib.sha256(weights).hexdigest()
    files[MANIFEST] = json.dumps(manifest).encode()
    with pytest.raises(DataError, match="theta_o's weights have fingerprint"):
        import_testbed(write_archive(tmp_path / "forged.tgz", files), tmp_path / "cache")


@pytest.mark.parametrize("name", ["../evil.json", "/tmp/evil.json", "theta_o/../../evil.json"])
def test_a_member_outside_the_folder_is_refused(tmp_path, name):
    files = members(PINNED)
    manifest = json.loads(files[MANIFEST])
    manifest["files"][name] = {"sha256": "0" * 64, "size": 2}
    files[MANIFEST] = json.dumps(manifest).encode()
    files[name] = b"{}"
    with pytest.raises(DataError, match="would land outside the testbed folder"):
        import_testbed(write_archive(tmp_path / "evil.tgz", files), tmp_path / "cache")
    assert not (tmp_path / "evil.json").exists() and imported_nothing(tmp_path)


def test_links_pickles_and_unlisted_members_are_refused(tmp_path):
    files = members(PINNED)
    link = tarfile.TarInfo("theta_o/link.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    manifest = json.loads(files[MANIFEST])
    manifest["files"]["theta_o/link.json"] = {"sha256": "0" * 64, "size": 0}
    with_link = {**files, MANIFEST: json.dumps(manifest).encode()}
    with pytest.raises(DataError, match="link or special file"):
        import_testbed(write_archive(tmp_path / "link.tgz", with_link, [link]), tmp_path / "cache")
    with pytest.raises(DataError, match="'theta_o/pytorch_model.bin' is not an allowed kind of file"):
        import_testbed(write_archive(tmp_path / "pickle.tgz", {**files, "theta_o/pytorch_model.bin": b"x"}),
                       tmp_path / "cache")
    with pytest.raises(DataError, match="'notes.txt' is not in the manifest"):
        import_testbed(write_archive(tmp_path / "extra.tgz", {**files, "notes.txt": b"x"}), tmp_path / "cache")
    assert imported_nothing(tmp_path)


def test_foreign_and_truncated_files_are_refused(tmp_path):
    text = tmp_path / "notes.tgz"
    text.write_text("not an archive")
    with pytest.raises(DataError, match="notes.tgz: not a causalloc testbed file"):
        import_testbed(text, tmp_path / "cache")
    other = write_archive(tmp_path / "other.tgz", {"hello.json": b"{}"})
    with pytest.raises(DataError, match=r"other.tgz: not a causalloc testbed file \(manifest.json missing\)"):
        import_testbed(other, tmp_path / "cache")
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(PINNED.read_bytes()[: PINNED.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.tgz: damaged testbed file"):
        import_testbed(truncated, tmp_path / "cache")
    assert main(["testbed", "import", str(text), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert imported_nothing(tmp_path)


def test_gzip_of_a_plain_file_is_foreign(tmp_path):
    path = tmp_path / "plain.tgz"
    path.write_bytes(gzip.compress(b"plain text"))
    with pytest.raises(DataError, match="not a causalloc testbed file"):
        import_testbed(path, tmp_path / "cache")


def test_a_spec_names_a_testbed_file_and_nothing_that_builds_another(tmp_path):
    spec = {"budgets": [0.1], "seeds": [0, 1], "k_random": 1,
            "testbed": {"file": str(PINNED)}, "conditions": [{"strategy": "oracle"}, {"strategy": "random"}],
            "algorithms": [{"name": "npo", "lr": 1e-3, "steps": 2}]}
    parsed = parse(spec).testbed
    record = read_record(PINNED)
    assert parsed.pinned == record["theta_o_fingerprint"] and parsed.kind == "tiny"
    assert "file" not in parsed.to_dict(), "run ids must not depend on where the file lies"
    with pytest.raises(SpecError, match="testbed.seed: not allowed beside testbed.file"):
        parse({**spec, "testbed": {"file": str(PINNED), "seed": 3}})
    with pytest.raises(SpecError, match="testbed.file: .*does not exist"):
        parse({**spec, "testbed": {"file": str(tmp_path / "none.tgz")}})
    (tmp_path / "foreign.tgz").write_text("x")
    with pytest.raises(SpecError, match="testbed.file: .*not a causalloc testbed file"):
        parse({**spec, "testbed": {"file": str(tmp_path / "foreign.tgz")}})


def test_an_imported_testbed_drops_the_builds_record_of_scores(tmp_path, tmp_path_factory):
    """A built testbed records theta_o's and theta_r's ES per item (runs read their step-0 scores
    from it); nothing checks that record against the weights, so an import leaves it out and
    runs on the imported testbed compute those scores."""
    from causalloc.testbed import ITEM_ES_FILE, build_testbed, config_for
    from tests.unit.test_testbed import FAST, shared_cache

    built = build_testbed(config_for("tiny", **FAST), cache_dir=shared_cache(tmp_path_factory))
    assert built.recorded_item_es() is not None
    out = tmp_path / "fast.tgz"
    export_testbed(built.path, out)
    assert ITEM_ES_FILE in members(out)
    imported = import_testbed(out, tmp_path / "cache")
    assert not (imported.path / ITEM_ES_FILE).exists() and imported.recorded_item_es() is None


def test_a_damaged_record_of_scores_is_refused_naming_the_file(tmp_path, tmp_path_factory):
    import shutil

    from causalloc.testbed import ITEM_ES_FILE, build_testbed, config_for, load_testbed
    from tests.unit.test_testbed import FAST, shared_cache

    copy = tmp_path / "copy"
    shutil.copytree(build_testbed(config_for("tiny", **FAST), cache_dir=shared_cache(tmp_path_factory)).path, copy)
    record = json.loads((copy / ITEM_ES_FILE).read_text())
    (copy / ITEM_ES_FILE).write_text(json.dumps({**record, "theta_o": record["theta_o"][:-1]}))
    with pytest.raises(DataError, match=f"{ITEM_ES_FILE}: damaged record"):
        load_testbed(copy).recorded_item_es()
    del record["dtype"]
    (copy / ITEM_ES_FILE).write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"damaged record \(lacks \['dtype'\]\)"):
        load_testbed(copy).recorded_item_es()
    (copy / ITEM_ES_FILE).write_text("{")
    with pytest.raises(DataError, match="damaged record \\(not JSON"):
        load_testbed(copy).recorded_item_es()
