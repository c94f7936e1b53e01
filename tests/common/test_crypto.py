import stat
from pathlib import Path

import pytest

from incisive.common.crypto import Pseudonymiser, generate_key, read_secret, write_secret
from incisive.common.errors import ConfigError


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "k.key"
    key = generate_key()
    write_secret(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == key
    with pytest.raises(FileExistsError):
        write_secret(path, generate_key())


def test_bad_key_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_secret(tmp_path / "missing.key")
    (tmp_path / "short.key").write_text("abcd")
    with pytest.raises(ConfigError, match="expected 32"):
        read_secret(tmp_path / "short.key")
    (tmp_path / "junk.key").write_text("not hex at all")
    with pytest.raises(ConfigError, match="not valid hex"):
        read_secret(tmp_path / "junk.key")


def test_pseudonyms_are_keyed_and_deterministic() -> None:
    a, b = Pseudonymiser(generate_key()), Pseudonymiser(generate_key())
    assert a.patient("MRN123") == a.patient("MRN123") == a.patient(" MRN123 ")
    assert a.patient("MRN123") != a.patient("MRN124")
    assert a.patient("MRN123") != b.patient("MRN123")
    assert "MRN123" not in a.patient("MRN123")


def test_uids_are_valid_2_25_form() -> None:
    p = Pseudonymiser(generate_key())
    uid = p.uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320")
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert uid.split(".")[2].isdigit() and not uid.split(".")[2].startswith("0")
    assert p.uid("1.2.3") == p.uid("1.2.3\x00") != p.uid("1.2.4")


def test_day_offset_range_and_stability() -> None:
    p = Pseudonymiser(generate_key())
    offsets = {p.day_offset(f"P{i}") for i in range(500)}
    assert all(-3651 <= o <= -1826 for o in offsets)
    assert len(offsets) > 100
    assert p.day_offset("PX") == p.day_offset("PX")
