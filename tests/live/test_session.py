"""LiveSession: only new tiles are computed, results match predict_slide, errors do not stop it."""

import threading

import numpy as np
import pytest

from napari_neuroseg.analysis import plan_slide, predict_slide
from napari_neuroseg.engine import Region, TileCache
from napari_neuroseg.live import Box, LiveSession, ViewTooLarge


def drain(session):
    """Serve until the queue is empty; the list of updates."""
    updates = list(session.serve(should_stop=lambda: len(session.queue) == 0))
    assert session.pending == 0
    return updates


def world_box(plan, region):
    """The world box over working pixels ``region`` (pixel edges)."""
    (sy, sx), (ty, tx) = plan.scale, plan.translate
    return Box(ty + (region.y0 - 0.5) * sy, tx + (region.x0 - 0.5) * sx,
               ty + (region.y1 - 0.5) * sy, tx + (region.x1 - 0.5) * sx)


@pytest.fixture
def plan(slide, toy_spec):
    return plan_slide(slide, toy_spec(), tissue_only=False)


def test_new_view_computes_only_new_tiles_and_matches_predict_slide(plan, Counting):
    predictor = Counting()
    session = LiveSession(plan, predictor, "toy", batch_size=4)
    stride = session.grid.stride[0]  # 48 working px
    first = Region(0, 0, 2 * stride, 3 * stride)  # 2 x 3 tiles
    assert session.request(world_box(plan, first)) == 6
    updates = drain(session)
    assert predictor.tiles == 6 and sum(u.computed for u in updates) == 6
    assert updates[-1].done and updates[-1].region is not None
    # move right by one tile: only the new column is computed
    second = Region(0, stride, 2 * stride, 4 * stride)
    assert session.request(world_box(plan, second)) == 2
    drain(session)
    assert predictor.tiles == 8
    # panning back computes nothing
    assert session.request(world_box(plan, first)) == 0
    assert predictor.tiles == 8
    direct = predict_slide(plan, Counting())  # the whole 512 x 512 working grid
    whole = Region(0, 0, 2 * stride, 4 * stride)
    probs, labels = session.store.read(whole)
    np.testing.assert_allclose(probs, direct.probabilities[:, :2 * stride, :4 * stride],
                               atol=0.5 / 255 + 1e-5)
    np.testing.assert_array_equal(labels, direct.labels[:2 * stride, :4 * stride])
    session.close()


def test_nearest_tiles_come_first_and_stale_requests_are_dropped(plan, Counting):
    predictor = Counting()
    session = LiveSession(plan, predictor, "toy", batch_size=1)
    h, w = plan.working_shape
    session.request(world_box(plan, Region(0, 0, h, w)))
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    first = next(session.serve())
    core = first.region
    assert np.hypot(*(np.array(core.center) - centre)) < session.grid.stride[0]
    # a new view replaces everything that was pending
    queued = session.request(world_box(plan, Region(0, 0, 10, 10)))
    assert queued == 1 and len(session.queue) == 1
    drain(session)
    assert predictor.tiles == 2
    session.close()


def test_overlapping_tile_classifier_matches_predict_slide(slide, toy_spec, Counting):
    # tile mode with stride 32 on 64 px windows: every pixel averages 4 tiles
    plan = plan_slide(slide, toy_spec(task="tile_classification", halo=0, stride=32),
                      tissue_only=False)
    session = LiveSession(plan, Counting(dense=False), "toy", batch_size=8)
    assert session.grid.overlap == 32
    region = Region(64, 64, 160, 192)
    session.request(world_box(plan, region))
    drain(session)
    direct = predict_slide(plan, Counting(dense=False))
    probs, labels = session.store.read(region)
    np.testing.assert_allclose(probs, direct.probabilities[:, 64:160, 64:192], atol=0.5 / 255)
    np.testing.assert_array_equal(labels, direct.labels[64:160, 64:192])
    session.close()


def test_tissue_filter_and_shared_cache_across_sessions(slide, toy_spec, Counting):
    plan = plan_slide(slide, toy_spec(preprocessing=("tissue_mask",)))
    cache = TileCache()
    h, w = plan.working_shape
    first = Counting()
    with_cache = LiveSession(plan, first, "toy", cache=cache, max_tiles=1000)
    with_cache.request_all()
    updates = drain(with_cache)
    skipped = sum(u.skipped for u in updates)
    assert skipped > 0 and first.tiles == with_cache.grid.n_tiles[0] ** 2 - skipped
    # a new session (e.g. after switching models and back) is served from the cache
    second = Counting()
    again = LiveSession(plan, second, "toy", cache=cache)
    again.request(world_box(plan, Region(0, 0, h // 2, w // 2)))
    updates = drain(again)
    assert second.tiles == 0 and sum(u.cached for u in updates) > 0
    # another model key misses the cache
    third = Counting()
    other = LiveSession(plan, third, "other-model", cache=cache)
    other.request(world_box(plan, Region(h // 2 - 48, w // 2 - 48, h // 2 + 48, w // 2 + 48)))
    drain(other)
    assert third.tiles > 0
    for s in (with_cache, again, other):
        s.close()


def test_a_failing_batch_is_reported_and_the_session_goes_on(plan, Counting):
    class Flaky(Counting):
        def __call__(self, batch):
            if self.calls == 0:
                self.calls += 1
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().__call__(batch)

    session = LiveSession(plan, Flaky(), "toy", batch_size=8)
    session.request(world_box(plan, Region(0, 0, 48, 96)))
    updates = drain(session)
    assert updates[0].error and "out of memory" in updates[0].error
    assert session.done_tiles == 0
    # asking again retries the failed tiles
    assert session.request(world_box(plan, Region(0, 0, 48, 96))) == 2
    drain(session)
    assert session.done_tiles == 2
    session.close()


def test_a_view_too_large_is_refused_and_serve_stops_on_close(plan, Counting):
    session = LiveSession(plan, Counting(), "toy", max_tiles=4)
    with pytest.raises(ViewTooLarge, match="zoom in"):
        session.request(world_box(plan, Region(0, 0, 300, 300)))
    assert session.request(Box(-1e6, -1e6, -1e5, -1e5)) == 0  # off the slide
    results = []
    thread = threading.Thread(target=lambda: results.extend(session.serve()))
    thread.start()
    session.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and results == []


class PeriodicSlide:
    """A lazy huge RGB level: a small texture repeated (any slice is built on demand)."""

    def __init__(self, shape, texture):
        self.shape = (*shape, 3)
        self.ndim, self.dtype = 3, np.dtype(np.uint8)
        self.texture = texture

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        th, tw = self.texture.shape[:2]
        iy = np.arange(ys.start, ys.stop) % th
        ix = np.arange(xs.start, xs.stop) % tw
        return self.texture[iy[:, None], ix[None, :]]


def test_panning_a_huge_slide_keeps_memory_bounded(slide, toy_spec, Counting):
    import resource

    from napari_neuroseg.io import LazyImage

    texture = np.asarray(slide.levels[1][:256, :256])
    big = LazyImage(levels=[PeriodicSlide((100_000, 100_000), texture)], axes="yxc",
                    scale=(1.0, 1.0), unit="um", name="huge", modality="slide", source="huge")
    plan = plan_slide(big, toy_spec(patch=128, halo=16), tissue_only=False)
    cache = TileCache(max_bytes=8 * 2**20)
    session = LiveSession(plan, Counting(), "toy", cache=cache, batch_size=16)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(5):  # 5 views of 480 x 384 px along a diagonal
        y = x = 1000 + 19000 * i
        session.request(Box(y, x, y + 384, x + 480))
        drain(session)
        heat = session.store.heatmap_levels(1)[0][y:y + 384, x:x + 480].compute()
        assert heat.shape == (384, 480) and heat.max() > 0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert session.store.n_levels >= 8 and 5 * 20 <= session.done_tiles <= 5 * 42
    assert cache.nbytes <= cache.max_bytes
    assert session.store.nbytes_stored < 40 * 2**20  # sparse: a few chunks per view
    assert grown_mb < 300, f"RSS grew by {grown_mb:.0f} MB"
    session.close()
