"""memorymodels/fileio.py: atomic writes that leave nothing behind, reads that tell missing from damaged."""

import errno
import os

import pytest

from memorymodels import fileio
from memorymodels.fileio import CorruptFileError


@pytest.mark.parametrize("content, problem", [
    (b"\x89PNG\r\n\x1a\n\x00\xff", r"not valid JSON"),
    (b'{"identity": "abc", "status": "runn', r"not valid JSON .*; 35 bytes"),
    (b"", r"empty; 0 bytes"),
    (b"[1, 2, 3]", r"holds a JSON list, not a JSON dict"),
])
def test_read_json_names_the_file_and_what_is_wrong(tmp_path, content, problem):
    path = tmp_path / "run.json"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=rf"run.json: {problem}"):
        fileio.read_json(path)


def test_read_json_of_a_missing_file_is_none(tmp_path):
    assert fileio.read_json(tmp_path / "nope.json") is None
    fileio.write_json(tmp_path / "x.json", {"a": 1})
    assert fileio.read_json(tmp_path / "x.json") == {"a": 1}


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    fileio.write_json(path, {"old": True})

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as caught:
        fileio.write_json(path, {"new": True})
    assert fileio.is_disk_full(caught.value)
    assert fileio.read_json(path) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


@pytest.mark.parametrize("error, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
    (Exception("Error while serializing: I/O error: No space left on device (os error 28)"), True),  # safetensors
    (OSError(errno.EACCES, "Permission denied"), False),
    (RuntimeError("something else"), False),
])
def test_disk_full_is_recognised_however_the_library_reports_it(error, full):
    assert fileio.is_disk_full(error) is full
    try:
        raise RuntimeError("wrapped") from error
    except RuntimeError as wrapped:
        assert fileio.is_disk_full(wrapped) is full


def test_free_bytes_and_their_words(tmp_path):
    assert fileio.free_bytes(tmp_path / "not" / "yet") > 0  # the nearest existing parent
    assert fileio.human_bytes(1536) == "1.5 KiB" and fileio.human_bytes(None) == "unknown"
    assert fileio.human_bytes(12) == "12 B"


# (id, group (None or "mine": the user's own group), group_adds, the folder's mode)
PRIVATE_DIRS = [
    ("owner-only", None, False, 0o700),
    ("group-reads", "mine", False, 0o2750),
    ("group-adds-its-own", "mine", True, 0o3770),
]


@pytest.mark.parametrize("group, adds, mode", [c[1:] for c in PRIVATE_DIRS], ids=[c[0] for c in PRIVATE_DIRS])
def test_private_folders_keep_out_everyone_but_the_owner_and_the_group(tmp_path, group, adds, mode):
    gid = os.getgid() if group == "mine" else None
    old = os.umask(0)  # a permissive umask changes nothing
    try:
        made = fileio.make_private_dir(tmp_path / "a" / "run", gid, group_adds=adds)
    finally:
        os.umask(old)
    assert made == tmp_path / "a" / "run" and os.stat(made).st_mode & 0o7777 == mode
    assert os.stat(made).st_gid == (gid if gid is not None else os.stat(made).st_gid)
    (made / "inside").mkdir()  # what the trainer makes inside keeps the group (setgid)
    if gid is not None:
        assert os.stat(made / "inside").st_gid == gid
    os.chmod(made, 0o755)  # its owner's later choice
    assert fileio.make_private_dir(made, gid) == made and os.stat(made).st_mode & 0o777 == 0o755
