"""The lock file: pins only, atomic writes that keep what users wrote, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagegate import LockFile, LockFileError, find_lock_file, parse_reference

DIGEST = "sha256:" + "12" * 32


def test_round_trip_keeps_other_entries_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "imagegate.lock.json"
    path.write_text(json.dumps({"version": 1, "comment": "owned by CI", "images": {
        "other": {"reference": f"reg.example.com/other:1.0.0@{DIGEST}", "owner": "team-b"}}}))
    lock = LockFile.load(path)
    lock.set("etl", parse_reference(f"reg.example.com/etl:c-abc@{DIGEST}"), context="jobs/etl")
    lock.save()
    data = json.loads(path.read_text())
    assert data["comment"] == "owned by CI"
    assert data["images"]["other"]["owner"] == "team-b"
    assert data["images"]["etl"]["reference"] == f"reg.example.com/etl:c-abc@{DIGEST}"
    assert data["images"]["etl"]["digest"] == DIGEST and data["images"]["etl"]["context"] == "jobs/etl"
    assert LockFile.load(path).get("etl").digest == DIGEST
    assert [p.name for p in tmp_path.iterdir()] == ["imagegate.lock.json"]  # no temp file left


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    lock = LockFile(tmp_path / "imagegate.lock.json")
    lock.set("etl", parse_reference(f"reg.example.com/etl@{DIGEST}"))
    with pytest.raises(LockFileError, match=r"no image named 'elt' \(locked names: etl\)") as info:
        lock.get("elt")
    assert info.value.name == "elt"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read the lock file"),
        ('{"images": []}', '"images" object'),
        ('{"version": 2, "images": {}}', "version 2"),
        ('{"images": {"etl": {"reference": "reg.example.com/etl:1.0.0"}}}', "has no digest"),
        ('{"images": {"etl": {"reference": "Bad//ref"}}}', "invalid image reference"),
        ('{"images": {"etl": {}}}', 'needs a "reference"'),
    ],
)
def test_bad_lock_files_are_refused_at_load(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "imagegate.lock.json"
    path.write_text(content)
    with pytest.raises(LockFileError, match=message):
        LockFile.load(path)


def test_unpinned_reference_cannot_be_locked(tmp_path: Path) -> None:
    with pytest.raises(LockFileError, match="no digest"):
        LockFile(tmp_path / "x.json").set("etl", parse_reference("reg.example.com/etl:1.0.0"))


def test_missing_file_and_discovery(tmp_path: Path) -> None:
    with pytest.raises(LockFileError, match="lock file not found"):
        LockFile.load(tmp_path / "imagegate.lock.json")
    assert find_lock_file(tmp_path) is None
    (tmp_path / "imagegate.lock.json").write_text('{"version": 1, "images": {}}')
    (tmp_path / "dags").mkdir()
    assert find_lock_file(tmp_path / "dags") == tmp_path / "imagegate.lock.json"
