"""Checkpoint rules (memorymodels/checkpoints.py): completeness, verification of damaged files, set-aside and pruning."""

import hashlib
import json

import pytest

from memorymodels import checkpoints
from memorymodels.checkpoints import CheckpointError

from .conftest import make_checkpoint


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip(path, at=-1, find: bytes | None = None):
    """Flip one bit in place, same size: at ``at``, or in the first byte of ``find`` (a tensor's bytes)."""
    data = bytearray(path.read_bytes())
    i = data.index(find) if find is not None else at
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def flip_member(path, member: str = "data/0"):
    """Flip one bit of a tensor's bytes inside a torch.save zip (``archive/data/0``), same size: the zip's directory
    and every header stay intact, ``torch.load`` still reads it."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member))
    data = bytearray(path.read_bytes())
    name_length, extra_length = (int.from_bytes(data[info.header_offset + k:info.header_offset + k + 2], "little")
                                 for k in (26, 28))
    data[info.header_offset + 30 + name_length + extra_length + 1] ^= 0x01  # inside the stored tensor bytes
    path.write_bytes(bytes(data))


def swap(path, old: bytes, new: bytes):
    """Replace ``old`` by ``new`` (the same length) in place: the file stays the same size and still parses."""
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))


ONES = b"\x00\x00\x80\x3f"  # float32 1.0: the optimizer state's exp_avg in make_checkpoint


# Each kind of damage: what is done to a complete checkpoint, and the message (file, problem) that must say so.
DAMAGE = {
    "truncated model.safetensors": (lambda c: truncate(c / "model.safetensors"),
                                    r"model.safetensors: truncated \(\d+ bytes; its header"),
    "safetensors header garbage": (lambda c: (c / "model.safetensors").write_bytes(
                                       (20).to_bytes(8, "little") + b"not json at all!!!!!" + b"\0" * 64),
                                   r"model.safetensors: damaged safetensors header"),
    "missing optimizer.pt": (lambda c: (c / "optimizer.pt").unlink(),
                             r"optimizer.pt: missing \(the checkpoint's COMPLETE marker lists it\)"),
    "truncated optimizer.pt": (lambda c: truncate(c / "optimizer.pt"),
                               r"optimizer.pt: damaged or truncated torch file"),
    "garbage trainer_state.json": (lambda c: (c / "trainer_state.json").write_bytes(b"\x00\xff garbage"),
                                   r"trainer_state.json: not valid JSON"),
    "trainer_state.json of another step": (lambda c: (c / "trainer_state.json").write_text('{"global_step": 3}'),
                                           r"trainer_state.json: says global_step 3, not 20"),
    "garbage COMPLETE marker": (lambda c: (c / "COMPLETE").write_text("[1, 2"), r"COMPLETE: not valid JSON"),
    # same size, still parseable: only the content hashes recorded in the COMPLETE marker see these
    "bit flipped in model.safetensors": (lambda c: flip(c / "model.safetensors"),
                                         r"model.safetensors: changed since the checkpoint was completed"),
    "bit flipped in optimizer.pt": (lambda c: flip(c / "optimizer.pt", find=ONES),
                                    r"optimizer.pt: changed since the checkpoint was completed"),
    "trainer_state.json edited in place": (lambda c: swap(c / "trainer_state.json", b"[]", b"{}"),
                                           r"trainer_state.json: changed since the checkpoint was completed"),
    "hashes in the marker damaged": (lambda c: (c / "COMPLETE").write_text(json.dumps(
        {**json.loads((c / "COMPLETE").read_text()), "sha256": ["model.safetensors"]})),
        r"COMPLETE: damaged: 'sha256' is not a mapping"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damage_is_found_and_named(tmp_path, kind):
    damage, message = DAMAGE[kind]
    good = make_checkpoint(tmp_path, 10)
    bad = make_checkpoint(tmp_path, 20)
    checkpoints.verify_checkpoint(bad)  # intact before
    damage(bad)
    with pytest.raises(CheckpointError, match=message) as caught:
        checkpoints.verify_checkpoint(bad)
    assert str(caught.value).startswith(str(bad))

    said = []
    assert checkpoints.newest_usable(tmp_path, set_aside=False, log=said.append) == good
    assert bad.is_dir() and len(said) == 1  # other ranks only skip it
    assert checkpoints.newest_usable(tmp_path, set_aside=True, log=said.append) == good
    assert len(said) == 2 and "\n" not in said[1] and str(bad) in said[1]
    assert "set aside as checkpoint-20.damaged-1" in said[1]
    assert not bad.exists() and (tmp_path / "checkpoint-20.damaged-1").is_dir()


def test_no_usable_checkpoint_when_all_are_damaged(tmp_path):
    truncate(make_checkpoint(tmp_path, 10) / "model.safetensors")
    said = []
    assert checkpoints.newest_usable(tmp_path, set_aside=True, log=said.append) is None and len(said) == 1


def test_a_marker_from_before_the_hashes_gets_the_cheap_checks_only(tmp_path):
    folder = make_checkpoint(tmp_path, 10)
    marker = json.loads((folder / "COMPLETE").read_text())
    del marker["sha256"]
    (folder / "COMPLETE").write_text(json.dumps(marker))
    flip(folder / "model.safetensors")
    checkpoints.verify_checkpoint(folder)  # nothing to compare with: accepted, as before
    truncate(folder / "optimizer.pt")
    with pytest.raises(CheckpointError, match="optimizer.pt: damaged or truncated torch file"):
        checkpoints.verify_checkpoint(folder)


def test_a_damaged_checkpoint_is_never_marked_complete(tmp_path):
    folder = make_checkpoint(tmp_path, 30, complete=False)
    truncate(folder / "optimizer.pt")
    with pytest.raises(CheckpointError, match="optimizer.pt: damaged or truncated"):
        checkpoints.mark_complete(folder)
    assert not (folder / "COMPLETE").exists()


def test_the_marker_lists_the_files_it_vouches_for(tmp_path):
    folder = make_checkpoint(tmp_path, 10)
    marker = json.loads((folder / "COMPLETE").read_text())
    assert marker["files"] == ["model.safetensors", "optimizer.pt", "trainer_state.json"] and marker["step"] == 10
    assert marker["sha256"] == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                                for name in marker["files"]}


def test_partial_checkpoints_are_ignored_set_aside_then_pruned(tmp_path):
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 20)
    make_checkpoint(tmp_path, 30, complete=False)
    complete, partial = checkpoints.checkpoints(tmp_path)
    assert [p.name for p in complete] == ["checkpoint-10", "checkpoint-20"]
    assert [p.name for p in partial] == ["checkpoint-30"]
    said = []
    moved = checkpoints.set_aside_partial(tmp_path, log=said.append)
    assert [p.name for p in moved] == ["checkpoint-30.partial-1"] and "incomplete checkpoint" in said[0]
    assert (tmp_path / "checkpoint-30.partial-1" / "model.safetensors").exists()  # newer than any complete: kept
    assert checkpoints.rotate_checkpoints(tmp_path, 1) == [tmp_path / "checkpoint-10"]
    assert [p.name for p in checkpoints.checkpoints(tmp_path)[0]] == ["checkpoint-20"]
    make_checkpoint(tmp_path, 5)
    make_checkpoint(tmp_path, 25)
    # an extended run started from checkpoint-5 (the shorter run's result): kept, and not counted in the limit
    assert checkpoints.rotate_checkpoints(tmp_path, 1, keep=(5,)) == [tmp_path / "checkpoint-20"]
    assert [p.name for p in checkpoints.checkpoints(tmp_path)[0]] == ["checkpoint-5", "checkpoint-25"]


def test_set_aside_checkpoints_go_once_a_complete_one_at_their_step_exists_and_only_the_newest_stays(tmp_path):
    make_checkpoint(tmp_path, 10)
    for step in (15, 40, 40, 50):  # killed while saving, again and again
        make_checkpoint(tmp_path, step, complete=False)
        checkpoints.set_aside_partial(tmp_path, log=lambda line: None)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-10", "checkpoint-50.partial-1"]
    make_checkpoint(tmp_path, 50)
    assert checkpoints.prune_set_aside(tmp_path) == [tmp_path / "checkpoint-50.partial-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-50"]


def test_remove_unfinished_never_touches_a_complete_checkpoint(tmp_path):
    done = make_checkpoint(tmp_path, 10)
    half = make_checkpoint(tmp_path, 20, complete=False)
    checkpoints.remove_unfinished(done)
    checkpoints.remove_unfinished(half)
    assert done.is_dir() and not half.exists()


def test_sharded_fsdp_and_deepspeed_layouts_pass_and_a_lost_shard_index_is_named(tmp_path):
    """What accelerate writes under FSDP SHARDED_STATE_DICT (dcp folders) and under DeepSpeed (a global_stepN folder,
    ``latest``, ``zero_to_fp32.py``) is accepted as it is; a dcp folder without its .metadata is not."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp

    fsdp = tmp_path / "fsdp" / "checkpoint-10"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one process writes every shard
        dcp.save({"model": {"w": torch.ones(4)}}, checkpoint_id=fsdp / "pytorch_model_fsdp_0")
        dcp.save({"optimizer": {"state": {"w": torch.zeros(4)}}}, checkpoint_id=fsdp / "optimizer_0")
    for rank in (0, 1):
        torch.save({"python": 1}, fsdp / f"rng_state_{rank}.pth")
    torch.save({"last_epoch": 10}, fsdp / "scheduler.pt")
    (fsdp / "trainer_state.json").write_text('{"global_step": 10}')
    checkpoints.mark_complete(fsdp)
    checkpoints.verify_checkpoint(fsdp)
    hashed = json.loads((fsdp / "COMPLETE").read_text())["sha256"]
    assert "optimizer_0/.metadata" in hashed and "scheduler.pt" in hashed and "rng_state_1.pth" in hashed
    shard = next(p for p in sorted((fsdp / "optimizer_0").iterdir()) if p.suffix == ".distcp")
    flip(shard)  # a shard of the optimizer state, same size
    with pytest.raises(CheckpointError, match=rf"optimizer_0/{shard.name}: changed since the checkpoint was completed"):
        checkpoints.verify_checkpoint(fsdp)
    flip(shard)
    checkpoints.verify_checkpoint(fsdp)
    (fsdp / "optimizer_0" / ".metadata").unlink()
    with pytest.raises(CheckpointError, match=r"optimizer_0/.metadata: missing \(sharded checkpoint"):
        checkpoints.verify_checkpoint(fsdp)

    deepspeed = make_checkpoint(tmp_path / "deepspeed", 10, complete=False)
    (deepspeed / "global_step10").mkdir()
    torch.save({"zero": 1}, deepspeed / "global_step10" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (deepspeed / "latest").write_text("global_step10")
    (deepspeed / "zero_to_fp32.py").write_text("# converter\n")
    checkpoints.mark_complete(deepspeed)
    checkpoints.verify_checkpoint(deepspeed)
