"""common/fsio: the durable atomic write (content, mode before data, fsync order, exclusivity, cleanup), the one
TOML writer, and a crash test: a process rewriting ``policy.toml`` through the node's own code is ``kill -9``'d
at random moments, and the file is always whole (the old version or the new one)."""

from __future__ import annotations

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest

from incisive.common import fsio
from incisive.common.fsio import atomic_write_bytes, atomic_write_text, fsync_dir, toml_document, toml_value
from incisive.node.policy import POLICY_FILE, Policy, load_policy


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_text_and_bytes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "first ✓\n")
    assert path.read_text(encoding="utf-8") == "first ✓\n"
    atomic_write_bytes(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    atomic_write_bytes(path, b"")
    assert path.read_bytes() == b""
    assert _leftovers(tmp_path) == []


def test_mode_is_set_before_any_data_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    old_umask = os.umask(0)  # the mode must not depend on the umask either
    try:
        atomic_write_bytes(tmp_path / "k.key", b"secret\n", mode=0o600)
    finally:
        os.umask(old_umask)
    assert seen and set(seen) == {0o600}
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600


def test_rewrite_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "incisive.toml"
    path.write_text("a = 1\n")
    path.chmod(0o640)
    atomic_write_text(path, "a = 2\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "a = 2\n"


def test_file_then_rename_then_directory_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "policy.toml"
    atomic_write_text(target, "participate = true\n")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert Path(events[0][1]).parent == tmp_path and events[0][1].endswith(".tmp")  # the temp file, same folder
    assert events[1][1] == str(target)
    assert events[2][1] == str(tmp_path)  # the directory, after the rename


def test_exclusive_never_overwrites_and_syncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.key"
    atomic_write_bytes(path, b"one", mode=0o600, exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(path, b"two", mode=0o600, exclusive=True)
    assert path.read_bytes() == b"one" and _leftovers(tmp_path) == []

    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    atomic_write_bytes(tmp_path / "other.key", b"x", exclusive=True)
    assert synced[-1] == str(tmp_path)


def test_exclusive_loses_a_race_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process creates the key between the existence check and the link: refused, theirs kept."""
    path = tmp_path / "pseudonym.key"
    real_link = os.link

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        Path(dst).write_bytes(b"theirs")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(path, b"ours", mode=0o600, exclusive=True)
    assert path.read_bytes() == b"theirs" and _leftovers(tmp_path) == []


def test_exclusive_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "links not supported")

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "k.key"
    atomic_write_bytes(path, b"k", mode=0o600, exclusive=True)
    assert path.read_bytes() == b"k" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        atomic_write_bytes(path, b"again", exclusive=True)
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "approved_bundles.json"
    path.write_text("[]")

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(path, '[{"name": "x"}]')
    assert path.read_text() == "[]" and _leftovers(tmp_path) == []


def test_fsync_dir_is_the_only_copy() -> None:
    from incisive.node import store

    assert store.fsync_dir is fsync_dir
    src = Path(fsio.__file__).parents[1]
    defined = [p for p in src.rglob("*.py") if "def fsync_dir" in p.read_text(encoding="utf-8")
               or "def _fsync_dir" in p.read_text(encoding="utf-8")]
    assert defined == [Path(fsio.__file__)]


@pytest.mark.parametrize("value", [0.5, 1e-05, 6 * 3600.0, 1e16, -2.0, float("inf"), float("-inf"), 0.1 + 0.2])
def test_floats_are_toml_floats(value: float) -> None:
    parsed = tomllib.loads(f"x = {toml_value(value)}")["x"]
    assert isinstance(parsed, float) and parsed == value


def test_toml_values_round_trip() -> None:
    values = {"flag": True, "off": False, "n": 2 * 1024**3, "neg": -3, "empty": "",
              "text": 'a "quoted" \\ back\\slash', "lines": "one\ntwo\r\tthree\x00\x1f\x7f\b\f",
              "unicode": "Hôpital 病院 🏥", "list": ["CT", "MR"], "none": []}
    document = toml_document(values, "a header")
    assert document.startswith("# a header\n")
    assert tomllib.loads(document) == values
    assert toml_value(None) == '"None"'  # what the FL run config has always carried for an unset option


def test_settings_files_use_the_one_writer(tmp_path: Path) -> None:
    from incisive.common.settings import NodeSettings
    from incisive.platform.settings import PlatformSettings

    platform = PlatformSettings(home=tmp_path, default_epsilon=0.25)
    text = platform.to_toml()
    assert "default_epsilon = 0.25\n" in text and tomllib.loads(text)["default_epsilon"] == 0.25
    node = NodeSettings(home=tmp_path, provider='Hospital "A"', node_id="a")
    assert tomllib.loads(node.to_toml())["provider"] == 'Hospital "A"'
    assert tomllib.loads(Policy(min_cell_count=7).to_toml())["min_cell_count"] == 7


# The child: a fresh interpreter that imports the node's policy code once, then forks one writer per round (it
# is single-threaded, so forking is safe). Each writer rewrites policy.toml through update_policy (read,
# validate, save) alternating between two versions of different sizes, and says when its first write is done.
_ZYGOTE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from incisive.node.policy import update_policy

    home = Path(sys.argv[1])
    for _ in sys.stdin:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            for i in range(1_000_000):
                wide = i % 2 == 0
                update_policy(home, min_cell_count=7 if wide else 5,
                              researchers=[f"researcher-{n:03d}" for n in range(40)] if wide else ["solo"])
                if i == 1:
                    os.write(w, b"x")
                    os.close(w)
            os._exit(0)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")


def test_policy_survives_kill_9_at_random_moments(tmp_path: Path) -> None:
    from incisive.node.policy import save_policy

    versions = {
        Policy(min_cell_count=7, researchers=[f"researcher-{n:03d}" for n in range(40)]).to_toml(),
        Policy(min_cell_count=5, researchers=["solo"]).to_toml(),
    }
    save_policy(tmp_path, Policy(min_cell_count=5, researchers=["solo"]))
    rng = random.Random(14)
    zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert zygote.stdin is not None and zygote.stdout is not None
    kills = 0
    try:
        for _ in range(200):
            zygote.stdin.write("go\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())  # its writer is past its first two writes, still writing
            time.sleep(rng.uniform(0, 0.004))  # a random moment: reading, validating, writing or renaming
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline() == "reaped\n"
            kills += 1
            text = (tmp_path / POLICY_FILE).read_text(encoding="utf-8")
            assert text in versions, f"torn or unknown policy.toml after kill {kills}:\n{text!r}"
            load_policy(tmp_path)  # and the node itself reads it
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=30)
    assert kills == 200
    others = [p.name for p in tmp_path.iterdir() if p.name != POLICY_FILE]
    assert all(name.startswith(f".{POLICY_FILE}.") and name.endswith(".tmp") for name in others)
