"""Seed search over a render(seed) that returns real photos: the reference person must rank first."""

from __future__ import annotations

import json

import numpy as np
import pytest
from identitylock.core.errors import IdentityLockError
from identitylock.core.seed_inputs import MAX_SEEDS, parse_seeds
from identitylock.core.seeds import (
    SeedRecord,
    rank_records,
    read_verify_metadata,
    search_seeds,
    verify_filename,
)

# seed -> photo. The reference is lisa_1; the other lisa photos are the same person, london* are not.
SEED_PHOTOS = {
    0: "london001_1.jpg",
    1: "lisa_3.jpg",
    2: "noface_1.jpg",
    3: "london004_1.jpg",
    4: "lisa_2.jpg",
    5: "london025_1.jpg",
    6: "lisa_4.jpg",
    7: "london042_2.jpg",
}
LISA_SEEDS = {1, 4, 6}


@pytest.fixture(scope="module")
def engine():
    from identitylock.core.faces import get_engine

    return get_engine("dlib")


@pytest.fixture(scope="module")
def photos(faces_dir):
    from identitylock.core.images import load_image, resize_long_side

    # 512 px on the long side, like an SD1.5 render
    return {s: resize_long_side(load_image(faces_dir / f), 512)[0] for s, f in SEED_PHOTOS.items()}


@pytest.fixture(scope="module")
def reference(faces_dir, engine):
    from identitylock.core.faces import analyze_file
    from identitylock.core.identity import reference_from_analyses

    return reference_from_analyses([analyze_file(faces_dir / "lisa_1.jpg", engine)], ["lisa_1.jpg"])


@pytest.fixture(scope="module")
def full_search(photos, reference, engine):
    calls = []

    def render(seed):
        calls.append(seed)
        return photos[seed]

    return search_seeds(render, "0:8", reference, engine=engine, top_k=3, keep_images="all"), calls


def test_parse_seeds():
    assert parse_seeds("0:4") == [0, 1, 2, 3]
    assert parse_seeds("0:10:4") == [0, 4, 8]
    assert parse_seeds("5, 17,42,5") == [5, 17, 42]
    assert parse_seeds([3, 1, 3]) == [3, 1]
    for bad in ("", "a:b", "1:2:0", "-1"):
        with pytest.raises(IdentityLockError):
            parse_seeds(bad)


def test_reference_person_ranks_first_and_noface_is_a_miss(full_search):
    result, calls = full_search
    assert calls == list(range(8))
    ranked = [r.seed for r in result.records]
    assert set(ranked[:3]) == LISA_SEEDS, result.table()
    assert all(r.locked for r in result.records[:3])
    assert not any(r.locked for r in result.records[3:])
    # the no-face photo is a flagged miss, ranked last, and did not stop the search
    last = result.records[-1]
    assert last.seed == 2 and last.miss and not last.found and last.drift is None and last.rescue is None
    assert [r.rank for r in result.records] == list(range(1, 9))
    drifts = [r.drift for r in result.records if not r.miss]
    assert drifts == sorted(drifts)
    best = result.best
    assert best.found and best.det_score is not None and best.pose is not None and best.detector
    assert result.top == result.records[:3]
    # report round-trips as JSON with every record
    rep = json.loads(result.to_json())
    assert rep["best_seed"] == best.seed and rep["locked"] == 3 and rep["misses"] == 1
    assert len(rep["records"]) == 8 and rep["records"][-1]["miss"] is True
    assert "miss" in result.table()


def test_stop_after_k_locked(photos, reference, engine):
    calls = []

    def render(seed):
        calls.append(seed)
        return photos[seed]

    res = search_seeds(render, "0:8", reference, engine=engine, stop_after=2, rescue=False)
    assert calls == [0, 1, 2, 3, 4]  # locked at seeds 1 and 4 -> stop
    assert res.stopped_early and len(res.locked) == 2 and res.seeds_requested == 8
    assert {r.seed for r in res.records[:2]} == {1, 4}


def test_batches_give_the_same_result_as_single_seeds(photos, reference, engine, full_search):
    """Determinism: same inputs, same ranking; a batched renderer gives the same as one seed at a time."""
    batches = []

    def render_batch(seeds):
        batches.append(list(seeds))
        return [photos[s] for s in seeds]

    res = search_seeds(
        None, "0:8", reference, engine=engine, render_batch=render_batch, batch_size=3, top_k=3
    )
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    single = full_search[0]
    assert [(r.seed, r.drift) for r in res.records] == [(r.seed, r.drift) for r in single.records]
    # images kept: only the top-k
    assert set(res.images) == {r.seed for r in res.records[:3]}


def test_render_failures_are_misses_not_crashes(photos, reference, engine):
    def render(seed):
        if seed == 1:
            return np.full((64, 64, 3), np.nan, np.float32)  # broken VAE output
        return photos[seed]

    res = search_seeds(render, [1, 4], reference, engine=engine, rescue=False)
    assert [r.seed for r in res.records] == [4, 1]
    assert res.records[1].miss and "NaN" in res.records[1].error


def test_save_verify_images_with_metadata(photos, reference, engine, tmp_path):
    res = search_seeds(
        lambda s: photos[s], [0, 4, 2], reference, engine=engine, save="all", out_dir=tmp_path,
        extra={"prompt": "photo of lisa"},
    )  # fmt: skip
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    expected = sorted(verify_filename(r.seed, r.drift) for r in res.records)
    assert names == expected
    assert "verify_seed_2_drift_miss.png" in names
    rec4 = next(r for r in res.records if r.seed == 4)
    assert f"verify_seed_4_drift_{rec4.drift:.4f}.png" in names
    meta = read_verify_metadata(rec4.path)
    assert meta["seed"] == 4 and meta["locked"] is True and abs(meta["drift"] - rec4.drift) < 1e-5
    assert meta["parameters"]["prompt"] == "photo of lisa" and meta["pose"]["yaw"] is not None


def test_rank_is_deterministic_with_ties():
    recs = [
        SeedRecord(seed=9, drift=0.1),
        SeedRecord(seed=3, drift=0.1),
        SeedRecord(seed=1),
        SeedRecord(seed=0),
    ]
    assert [r.seed for r in rank_records(recs)] == [3, 9, 0, 1]
    assert [r.seed for r in rank_records(list(reversed(recs)))] == [3, 9, 0, 1]


def test_render_with_the_person_and_someone_else_never_locks(photos, reference, engine):
    """Issue 15: a render with the person AND someone else counted as locked (drift of the larger face)."""
    two = np.concatenate([photos[6], photos[0]], axis=1)  # lisa_4 beside london001
    result = search_seeds(lambda s: two if s == 1 else photos[6], [1, 6], reference, engine=engine)
    rec = {r.seed: r for r in result.records}
    assert rec[1].faces == 2 and rec[1].drift is not None and rec[1].drift <= result.threshold
    assert rec[1].locked is False and rec[6].locked is True and rec[6].faces == 1
    assert [r.seed for r in result.records] == [6, 1]  # the person alone ranks first
    table = result.table()
    assert " faces " in table.splitlines()[0] and "several faces" in table
    assert json.loads(result.to_json())["records"][1]["faces"] == 2


def test_huge_seed_ranges_are_refused_without_allocating():
    """Issue 15: --seeds 0:100000000 grew memory without bound; 0:2**70 overflowed len()."""
    import tracemalloc

    tracemalloc.start()
    for spec in ("0:100000000", f"0:{2**70}", "0:60000,60000:120000", f"0:{MAX_SEEDS + 1}"):
        with pytest.raises(IdentityLockError, match="at most"):
            parse_seeds(spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000
    assert len(parse_seeds(f"0:{MAX_SEEDS}")) == MAX_SEEDS


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 0.0, 2.5, "abc"])
def test_bad_thresholds_are_refused(bad, photos, reference, engine):
    with pytest.raises(IdentityLockError, match="threshold"):
        search_seeds(lambda s: photos[s], [1], reference, engine=engine, threshold=bad)


# -- scale (issue 16): bounded images, per-seed failures, out-of-memory, results file, resume ----------------------
def test_only_the_top_k_images_are_held_in_memory(photos, reference, engine):
    """Issue 16: every render was held until the end (13 GB at 4,096 seeds x 1024 px)."""
    import tracemalloc

    def render(seed):
        return photos[seed % 8].copy()  # a fresh image per seed, as a sampler returns

    size = photos[1].nbytes
    dropped = []
    tracemalloc.start()
    res = search_seeds(
        render, "0:40", reference, engine=engine, top_k=2, rescue=False, on_drop=dropped.append
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert set(res.images) == {r.seed for r in res.records[:2]}
    assert peak < 12 * size, f"peak {peak / size:.1f} renders held for top_k=2 over 40 seeds"
    assert sorted(dropped) == sorted(r.seed for r in res.records[2:])  # callers drop what they keep beside


def test_any_render_or_scoring_exception_is_recorded_and_the_search_goes_on(photos, reference, engine):
    """Issue 16: only IdentityLockError was caught; a decoding error ended the search and lost what was found."""

    def render(seed):
        if seed == 2:
            raise RuntimeError("VAE decode exploded")
        if seed == 5:
            return "not an image"
        return photos[seed]

    res = search_seeds(render, "0:8", reference, engine=engine, rescue=False)
    rec = {r.seed: r for r in res.records}
    assert len(rec) == 8 and "RuntimeError: VAE decode exploded" in rec[2].error and rec[2].miss
    assert rec[5].error and rec[5].miss
    assert {r.seed for r in res.locked} == LISA_SEEDS
    assert json.loads(res.to_json())["errors"] == 2

    def score(image, seed):  # a labelled stand-in for a scorer that crashes on one render
        if seed == 1:
            raise ValueError("landmark model crashed")
        return SeedRecord(seed=seed, drift=0.5, found=True, faces=1)

    res = search_seeds(lambda s: photos[s], [0, 1, 3], reference, score=score)
    assert {r.seed: r.error for r in res.records} == {
        0: None,
        3: None,
        1: "ValueError: landmark model crashed",
    }


def test_out_of_memory_halves_the_batch_and_retries(photos, reference, engine):
    import torch

    batches = []

    def render_batch(seeds):
        batches.append(list(seeds))
        if len(seeds) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if 6 in seeds:
            raise RuntimeError("CUDA error: out of memory")  # even alone: recorded, the search goes on
        return [photos[s] for s in seeds]

    freed = []
    res = search_seeds(None, "0:8", reference, engine=engine, render_batch=render_batch, batch_size=8,
                       rescue=False, on_oom=lambda: freed.append(1))  # fmt: skip
    assert batches[:4] == [list(range(8)), [0, 1, 2, 3], [0, 1], [2, 3]]
    assert batches[4:] == [[4, 5], [6, 7], [6], [7]]
    assert res.batch_size == 1 and res.oom_retries == 3 and len(freed) == 4
    rec = {r.seed: r for r in res.records}
    assert len(rec) == 8 and [s for s, r in rec.items() if r.error] == [6]
    assert {r.seed for r in res.locked} == {1, 4}


def test_a_failure_at_seed_k_leaves_the_records_before_k_on_disk(photos, reference, engine, tmp_path):
    """Issue 16: the results were written only at the end; a crash or cancel at seed k lost them all."""
    from identitylock.core.seed_results import read_results

    class Cancelled(Exception):
        pass

    def render(seed):
        if seed == 5:
            raise Cancelled  # e.g. ComfyUI's cancel: fatal, not one seed's failure
        return photos[seed]

    path = tmp_path / "seed_search.jsonl"
    with pytest.raises(Cancelled):
        search_seeds(render, "0:8", reference, engine=engine, rescue=False, results=path, fatal=(Cancelled,))
    header, records = read_results(path)
    assert [r["seed"] for r in records] == [0, 1, 2, 3, 4] and header["backend"] == "dlib"
    assert [r["seed"] for r in records if r["locked"]] == [1, 4]

    # a process kill (not an exception) at seed 3: the lines before it are already on disk
    def killed(seed):
        if seed == 3:
            assert [r["seed"] for r in read_results(path)[1]] == [0, 1, 2]
            raise KeyboardInterrupt
        return photos[seed]

    with pytest.raises(KeyboardInterrupt):
        search_seeds(killed, "0:8", reference, engine=engine, rescue=False, results=path)


def test_resume_skips_the_seeds_already_done(photos, reference, engine, tmp_path, full_search):
    path = tmp_path / "seed_search.jsonl"
    calls, kill = [], [4]

    def render(seed):
        calls.append(seed)
        if seed in kill:
            kill.clear()
            raise KeyboardInterrupt
        return photos[seed]

    with pytest.raises(KeyboardInterrupt):
        search_seeds(render, "0:8", reference, engine=engine, results=path, extra={"prompt": "p"})
    with open(
        path, "a"
    ) as fh:  # hostile lines are rendered again, never ranked: wrong types, then a torn line
        fh.write(
            '{"seed": 5, "drift": "abc"}\n{"seed": 6, "drift": 0.1, "faces": "x"}\n[1]\n{"seed": 4, "drift": 0.1'
        )
    calls.clear()
    res = search_seeds(render, "0:8", reference, engine=engine, results=path, resume=True, extra={"prompt": "p"},
                       top_k=3, save="top", out_dir=tmp_path)  # fmt: skip
    assert calls[:4] == [4, 5, 6, 7] and res.resumed == 4
    assert set(calls[4:]) == {1}, (
        "seed 1 ranks in the top 3 but was rendered before the kill: its image again"
    )
    single = full_search[0]
    assert [(r.seed, r.drift) for r in res.records] == [(r.seed, r.drift) for r in single.records]
    assert set(res.images) == LISA_SEEDS and len(list(tmp_path.glob("verify_seed_*.png"))) == 3
    lines = path.read_text().splitlines()
    assert len(lines) == 9 and all(json.loads(x) for x in lines)  # header + 8 records, the torn line gone

    calls.clear()
    again = search_seeds(
        render, "0:8", reference, engine=engine, results=path, resume=True, extra={"prompt": "p"}
    )
    assert calls == [again.best.seed] and len(again.records) == 8  # only the best seed's image again
    with pytest.raises(IdentityLockError, match=r"other settings \(parameters.prompt\)"):
        search_seeds(
            render, "0:8", reference, engine=engine, results=path, resume=True, extra={"prompt": "q"}
        )
    with pytest.raises(IdentityLockError, match="threshold"):
        search_seeds(render, "0:8", reference, engine=engine, results=path, resume=True, extra={"prompt": "p"},
                     threshold=0.01)  # fmt: skip
