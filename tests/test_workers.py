"""The one worker pool (core/workers.py): order, per-pool worker context, and crash isolation for real.

A worker that dies (abort, _exit, segfault) on one image must never lose the batch: the items in flight are
retried one at a time in a fresh worker, the one that kills it again is reported with a reason, every other
result is kept. The tasks in tests/worker_tasks.py kill the process on a chosen file inside a batch of real
photos analysed by the real dlib engine.
"""

from __future__ import annotations

import shutil

import pytest
from identitylock.core import workers
from identitylock.core.errors import IdentityLockError, ModelNotFoundError
from identitylock.core.faces import CRASH_MESSAGE, _face_crashed, _face_setup, analyze_many
from identitylock.core.quality import QualityConfig
from identitylock.core.records import _records_crashed, _records_setup
from identitylock.core.workers import WorkerCrashError, WorkerPool
from identitylock.tests import worker_tasks

NAMES = ["london001_1", "london025_1", "lisa_2", "london004_2", "noface_1", "london042_1"]
FAST = {"rescue": False}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, faces_dir):
    d = tmp_path_factory.mktemp("batch")
    paths = []
    for n in NAMES:
        shutil.copy(faces_dir / f"{n}.jpg", d / f"{n}.jpg")
        paths.append(d / f"{n}.jpg")
    for how in ("abort", "exit", "segfault"):
        shutil.copy(faces_dir / "london006_1.jpg", d / f"poison-{how}.jpg")
    return d, paths


@pytest.fixture(scope="module")
def expected(batch):
    _, paths = batch
    return analyze_many(paths, workers=1, engine_kwargs={"backend": "dlib"}, **FAST)


def _summary(result):
    analysis, error = result
    if analysis is None:
        return error
    return [tuple(round(float(v), 1) for v in f.bbox) for f in analysis.faces]


@pytest.mark.parametrize("how", ["abort", "exit", "segfault"])
def test_a_worker_that_dies_on_one_image_loses_nothing_else(batch, expected, how):
    d, paths = batch
    poison = d / f"poison-{how}.jpg"
    items = paths[:3] + [poison] + paths[3:]
    with WorkerPool(
        worker_tasks.faces_or_die,
        _face_setup,
        ({"backend": "dlib"}, FAST),
        workers=2,
        crashed=_face_crashed,
        window=4,
    ) as pool:
        got = pool.map(items)
        assert pool.crashes == 2  # the batch crash, then the isolated retry of the poison
    assert len(got) == len(items)
    bad = got.pop(3)
    assert bad[0] is None and bad[1].startswith(CRASH_MESSAGE)
    assert [_summary(r) for r in got] == [_summary(r) for r in expected]
    assert sum(1 for a, _ in got if a is not None and a.found) >= 4  # real faces were found


def test_curation_records_report_the_crash_and_keep_the_rest(batch):
    d, paths = batch
    items = [str(p) for p in paths[:2]] + [str(d / "poison-abort.jpg")] + [str(p) for p in paths[2:4]]
    cfg = QualityConfig.for_strategy("C")
    with WorkerPool(
        worker_tasks.records_or_die,
        _records_setup,
        ({"backend": "dlib"}, cfg.to_dict(), FAST),
        workers=2,
        crashed=_records_crashed,
    ) as pool:
        recs = pool.map(items)
    assert [r.path for r in recs] == items
    assert recs[2].error.startswith("the face analyzer crashed on this image") and recs[2].quality is None
    assert all(r.error is None and r.quality is not None for i, r in enumerate(recs) if i != 2)


def test_setup_errors_are_raised_not_reported_as_crashes(batch):
    _, paths = batch
    with WorkerPool(worker_tasks.echo, worker_tasks.failing_setup, workers=2) as pool:
        with pytest.raises(ModelNotFoundError, match="no such model file"):
            pool.map(paths[:3])
        assert pool.crashes == 0


def test_workers_that_always_die_stop_with_one_clear_error(batch):
    _, paths = batch
    items = [str(p) for p in paths] * 2
    with WorkerPool(
        worker_tasks.always_die, worker_tasks.echo_setup, workers=2, crashed=_face_crashed
    ) as pool:
        with pytest.raises(WorkerCrashError, match="not one bad image"):
            pool.map(items)
    assert issubclass(WorkerCrashError, IdentityLockError)


def test_contexts_are_per_pool_and_never_left_in_the_caller():
    """Two pools with different setups in one process: each task sees its own context, none lingers."""
    for n in (1, 2):
        with WorkerPool(worker_tasks.echo, worker_tasks.echo_setup, ("a",), workers=n) as p1:
            with WorkerPool(worker_tasks.echo, worker_tasks.echo_setup, ("b",), workers=n) as p2:
                assert p1.map([1, 2]) == [(("a",), 1), (("a",), 2)]
                assert p2.map([3]) == [(("b",), 3)]
        assert workers._contexts == {}  # the in-process path keeps the context on the pool, not in a global
        assert p1._local is None and p2._local is None
