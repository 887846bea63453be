"""sim.content_store: DVC's hashing and cache layout, the Gear/FastCDC chunker, and the three stores."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from sim import content_store as cs


def _random(n, seed=0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ------------------------------------------------------------------ hashing as DVC does it
def test_file_md5_is_the_md5_of_the_whole_file_read_in_pieces(tmp_path):
    data = _random(cs.PIECE * 2 + 12345)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert cs.file_md5(path) == hashlib.md5(data).hexdigest() == cs.md5_bytes(data)


def test_tree_md5_is_dvc_dir_hash_of_sorted_entries():
    files = {"b.csv": "2" * 32, "a.csv": "1" * 32}
    h = cs.tree_md5(files)
    assert h.endswith(".dir") and len(h) == 36
    assert h == cs.tree_md5(dict(reversed(list(files.items()))))  # order of listing does not matter
    body = json.loads(cs._dir_bytes(files))
    assert body == [{"md5": "1" * 32, "relpath": "a.csv"}, {"md5": "2" * 32, "relpath": "b.csv"}]
    assert cs.tree_md5({"a.csv": "1" * 32, "c.csv": "2" * 32}) != h  # a rename is a new version
    assert cs.tree_md5({"a.csv": "1" * 32, "b.csv": "3" * 32}) != h


def test_step_key_changes_with_code_inputs_and_params_only():
    base = cs.step_key("code1", {"x": "h1", "y": "h2"}, {"lr": 0.1})
    assert base == cs.step_key("code1", {"y": "h2", "x": "h1"}, {"lr": 0.1})
    assert base != cs.step_key("code2", {"x": "h1", "y": "h2"}, {"lr": 0.1})
    assert base != cs.step_key("code1", {"x": "h1", "y": "h3"}, {"lr": 0.1})
    assert base != cs.step_key("code1", {"x": "h1", "y": "h2"}, {"lr": 0.2})


# ------------------------------------------------------------------ the chunker
def test_vectorised_gear_hash_matches_the_byte_loop():
    data = _random(3000, 1)
    h, ref, table = cs.gear_hashes(data), 0, [int(x) for x in cs.GEAR]
    for i, b in enumerate(data):
        ref = ((ref << 1) + table[b]) & cs.MASK64
        assert int(h[i]) == ref


@pytest.mark.parametrize("avg", [64, 256, 1024, 4096])
def test_cut_points_match_the_reference_loop(avg):
    data = _random(60_000, avg) + b"\x00" * 5000 + _random(7000, 99)  # a run of zeros forces max-size cuts
    assert cs.chunk_bounds(data, avg) == cs.gear_chunks_reference(data, avg)


def test_chunks_cover_the_data_within_min_and_max():
    data, avg = _random(200_000, 3), 1024
    chunks = cs.gear_chunks(data, avg)
    assert b"".join(chunks) == data
    sizes = np.array([len(c) for c in chunks])
    assert sizes[:-1].min() >= avg // 4 and sizes.max() <= 8 * avg
    assert 0.5 * avg < sizes.mean() < 2.5 * avg  # normalised chunking keeps the mean near the target


def test_an_insertion_moves_few_content_defined_chunks_but_every_later_fixed_block():
    data = _random(100_000, 4)
    edited = data[:30_000] + b"inserted row\n" + data[30_000:]
    for chunker, most_shared in (("gear_cdc", True), ("fixed", False)):
        a = {hashlib.sha256(c).digest() for c in cs.gear_chunks(data, 1024, chunker)}
        b = [hashlib.sha256(c).digest() for c in cs.gear_chunks(edited, 1024, chunker)]
        new = sum(x not in a for x in b)
        if most_shared:
            assert new <= 3
        else:
            assert new >= len(b) * 0.6  # every block after the insertion shifts


def test_empty_and_tiny_inputs():
    assert cs.chunk_bounds(b"", 64) == [] and cs.gear_chunks(b"") == []
    assert cs.chunk_bounds(b"abc", 64) == [3]
    with pytest.raises(ValueError):
        cs.chunk_bounds(b"abc", 64, min_size=128)


# ------------------------------------------------------------------ stores
def test_dvc_store_keeps_one_object_per_distinct_file_in_its_layout(tmp_path):
    store = cs.FileDedupStore(tmp_path)
    a, b = _random(5000, 5), _random(5000, 6)
    v1 = store.commit({"a.csv": a, "copy_of_a.csv": a})
    objects = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    md5 = hashlib.md5(a).hexdigest()
    assert f"files/md5/{md5[:2]}/{md5[2:]}" in objects and len(objects) == 2  # one file object + the .dir
    size1 = store.size_bytes()
    v2 = store.commit({"a.csv": a[:-1] + b"!", "copy_of_a.csv": a})  # one changed byte: a whole new object
    assert store.size_bytes() - size1 >= len(a)
    store.commit({"a.csv": b, "copy_of_a.csv": a})
    assert store.checkout(v1) == {"a.csv": a, "copy_of_a.csv": a} and v1 != v2
    assert store.size_bytes() == store.written


def test_chunk_store_round_trips_and_shares_chunks_across_versions(tmp_path):
    store = cs.ChunkStore(tmp_path / "c", avg_size=512)
    copies = cs.CopyStore(tmp_path / "copies")
    data = _random(40_000, 7)
    versions, total = [], 0
    for k in range(5):
        data = data[:10_000 * k] + b"edit" + data[10_000 * k + 4:]
        versions.append((store.commit({"d.bin": data}), data))
        copies.commit({"d.bin": data})
        total += len(data)
    for vid, content in versions:
        assert store.checkout(vid) == {"d.bin": content}
    assert store.size_bytes() == store.written < 0.4 * copies.size_bytes()
    assert copies.size_bytes() == total
    assert store.chunks_written < store.chunks_seen


def test_chunk_store_refuses_a_damaged_chunk(tmp_path):
    store = cs.ChunkStore(tmp_path, avg_size=256)
    vid = store.commit({"d.bin": _random(5000, 8)})
    victim = next((tmp_path / "chunks").rglob("*"))
    while victim.is_dir():
        victim = next(victim.iterdir())
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    with pytest.raises(ValueError, match="reassemble"):
        store.checkout(vid)
