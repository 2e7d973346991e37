"""Tile request queue: priority, generations, cancellation, the worker loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_neuroseg.engine.compute import TileComputer
from napari_neuroseg.engine.queue import TileQueue, iter_queue, run_worker
from napari_neuroseg.engine.tiling import TileGrid

GRID = TileGrid((1000, 1000), 100)


def tiles(*rc):
    return [GRID.tile(r, c) for r, c in rc]


def keys(batch):
    return [(req.tile.row, req.tile.col) for req in batch]


def test_fifo_without_focus_and_batches():
    q = TileQueue()
    assert q.put(tiles((0, 0), (5, 5), (2, 2))) == 3
    assert keys(q.get_batch(2)) == [(0, 0), (5, 5)]
    assert keys(q.get_batch(2)) == [(2, 2)]
    assert q.get_batch(2, timeout=0.01) == []


def test_nearest_to_focus_first_and_refocus_reorders():
    q = TileQueue()
    q.set_focus((550.0, 550.0))  # centre of tile (5, 5)
    q.put(tiles((0, 0), (9, 9), (5, 5), (4, 5), (5, 7)))
    assert keys(q.get_batch(2)) == [(5, 5), (4, 5)]
    q.set_focus((0.0, 0.0))
    assert keys(q.get_batch(3)) == [(0, 0), (5, 7), (9, 9)]


def test_duplicate_put_keeps_one_request_in_the_newer_generation():
    q = TileQueue()
    q.put(tiles((1, 1)))
    gen = q.new_generation()  # cancels the pending (1, 1)
    assert len(q) == 0 and q.cancelled == 1
    q.put(tiles((1, 1), (2, 2)), generation=gen - 1)
    assert q.put(tiles((1, 1))) == 0  # already pending: moved to the current generation
    batch = q.get_batch(5)
    assert keys(batch) == [(1, 1), (2, 2)]
    assert [q.is_current(r) for r in batch] == [True, False]


def test_new_generation_drops_stale_requests():
    q = TileQueue()
    q.put(tiles((0, 0), (0, 1)))
    assert q.generation == 0
    assert q.new_generation() == 1
    q.put(tiles((3, 3)))
    batch = q.get_batch(10)
    assert keys(batch) == [(3, 3)]
    assert batch[0].generation == 1 and q.cancelled == 2


def test_cancel_by_predicate():
    q = TileQueue()
    q.put(tiles(*[(r, c) for r in range(4) for c in range(4)]))
    assert q.cancel(lambda t: t.row >= 2) == 8
    assert len(q) == 8
    assert all(req.tile.row < 2 for req in q.get_batch(100))


def test_get_batch_blocks_until_a_put():
    q = TileQueue()
    got = []
    thread = threading.Thread(target=lambda: got.append(q.get_batch(4, timeout=5)))
    thread.start()
    time.sleep(0.05)
    q.put(tiles((7, 7)))
    thread.join(2)
    assert keys(got[0]) == [(7, 7)]


def test_close_wakes_waiters_and_refuses_puts():
    q = TileQueue()
    got = []
    thread = threading.Thread(target=lambda: got.append(q.get_batch(4)))
    thread.start()
    time.sleep(0.05)
    q.close()
    thread.join(2)
    assert got == [[]] and q.closed
    with pytest.raises(RuntimeError, match="closed"):
        q.put(tiles((0, 0)))


def test_worker_processes_everything_then_stops_when_closed():
    q = TileQueue()
    seen = []
    q.put(tiles(*[(0, c) for c in range(10)]))
    q.close()
    done = run_worker(q, lambda batch: seen.append(keys(batch)), batch_size=4)
    assert done == 10
    assert [len(b) for b in seen] == [4, 4, 2]


def test_worker_in_a_thread_with_cancellation_and_stop():
    q = TileQueue()
    processed = []
    stop = threading.Event()

    def process(batch):
        processed.extend(keys(batch))
        time.sleep(0.02)

    worker = threading.Thread(
        target=run_worker, args=(q, process), kwargs={"batch_size": 2, "should_stop": stop.is_set}
    )
    worker.start()
    q.put(tiles(*[(0, c) for c in range(10)]))
    time.sleep(0.03)
    q.new_generation()  # the viewer moved: drop the rest
    q.put(tiles((9, 9)))
    deadline = time.monotonic() + 2
    while (9, 9) not in processed and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(2)
    assert not worker.is_alive()
    assert processed[-1] == (9, 9)
    assert len(processed) < 11  # the cancelled tiles were never processed
    assert q.cancelled == 11 - len(processed)


def test_iter_queue_computes_batches_and_drops_stale_results():
    image = np.arange(1000 * 1000, dtype=np.float32).reshape(1000, 1000)
    q = TileQueue()
    calls = []

    def predictor(batch):
        calls.append(batch.shape[0])
        if len(calls) == 1:  # the view moves while the first batch is computed
            q.new_generation()
            q.put(tiles((9, 9)))
            q.close()
        return 2 * batch

    computer = TileComputer(image, predictor, GRID)
    q.put(tiles((0, 0), (0, 1), (0, 2)))
    results = list(iter_queue(q, computer, batch_size=2, activation="sigmoid"))
    assert calls == [2, 1]  # (0, 2) was cancelled before it was computed
    assert [keys([req]) for req, _ in results] == [[(9, 9)]]
    request, output = results[0]
    assert request.generation == 1 and output.source == "computed"
    np.testing.assert_allclose(output.values, 1.0)  # sigmoid of large values
