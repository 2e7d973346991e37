"""The coarse first pass of a live session: painted first, replaced, never stale after a pan."""

import numpy as np
import pytest

from napari_neuroseg.analysis import plan_slide
from napari_neuroseg.engine import Region
from napari_neuroseg.live import Box, LiveSession, visible_box
from napari_neuroseg.live.preview import CoarsePass

CANVAS = (300, 300)


@pytest.fixture
def plan(slide, toy_spec):
    # 64 px patches, halo 8: 48 px cores on a 512 x 512 working grid (1 µm/px)
    return plan_slide(slide, toy_spec(), stain_normalization=False, tissue_only=False)


def _session(plan, Counting, preview=True, **kwargs):
    return LiveSession(plan, Counting(), "toy", batch_size=2, preview=preview, **kwargs)


def _reference(plan, Counting, box):
    """What the view's cores are without a preview: the working tiles only."""
    session = _session(plan, Counting, preview=False)
    session.request(box)
    for _ in session.serve(should_stop=lambda: session.pending == 0):
        pass
    return session


def _cores(session, box):
    return session.grid.tiles_in(session.working_region(box), blended=False)


def _covered(session, core):
    probs, _ = session.store.read(session._clip(core.core))
    return bool(np.all(probs.sum(axis=0) > 0.9))  # the two classes add up to 1 where written


def test_the_coarse_pass_paints_the_whole_view_first_then_the_tiles_replace_it(plan, Counting):
    box = visible_box((256.0, 256.0), 1.0, CANVAS)
    session = _session(plan, Counting)
    queued = session.request(box)
    assert queued > session.preview_min_tiles
    updates = session.serve(should_stop=lambda: session.pending == 0)
    first = next(updates)
    assert first.preview and first.tiles == queued and first.computed == 0
    assert first.preview_mpp > plan.choice.working_mpp  # a coarser grid
    cores = _cores(session, box)
    assert session.previewed == {c.key for c in cores}
    assert all(_covered(session, c) for c in cores)  # the whole view at once
    preview, _ = session.store.read(session.working_region(box))
    rest = list(updates)
    assert not any(u.preview for u in rest) and rest[-1].done
    assert session.previewed == set()
    reference = _reference(plan, Counting, box)
    region = session.working_region(box)
    refined, labels = session.store.read(region)
    want, want_labels = reference.store.read(region)
    np.testing.assert_array_equal(refined, want)  # every coarse value was replaced
    np.testing.assert_array_equal(labels, want_labels)
    assert not np.array_equal(preview, refined)  # and the preview was coarser
    # the pyramid above follows the refined values too
    for level in range(1, session.store.n_levels):
        np.testing.assert_array_equal(np.asarray(session.store.labels_levels()[level]),
                                      np.asarray(reference.store.labels_levels()[level]))


def test_a_pan_mid_refinement_leaves_no_stale_tiles(plan, Counting):
    first = visible_box((200.0, 200.0), 1.0, CANVAS)
    second = visible_box((330.0, 330.0), 1.0, CANVAS)
    session = _session(plan, Counting)
    session.request(first)
    updates = session.serve()
    assert next(updates).preview
    assert not next(updates).preview  # one batch of working tiles refined
    refined_before = set(session._done)
    session.request(second)  # the pan: the rest of the first view is cancelled
    for update in updates:
        if update.done:
            break
    assert refined_before <= session._done  # nothing refined was lost
    reference = _reference(plan, Counting, second)
    for core in _cores(session, second):  # the new view: refined everywhere
        assert core.key in session._done and core.key not in session.previewed
        region = session._clip(core.core)
        np.testing.assert_array_equal(session.store.read(region)[0],
                                      reference.store.read(region)[0])
    # what still shows a preview is the part of the first view that was never refined
    old = {c.key for c in _cores(session, first)}
    assert session.previewed <= old - session._done
    both = Box(first.y0, first.x0, second.y1, second.x1)
    full = _reference(plan, Counting, both)  # pointwise predictor: any tiling agrees
    for key in session._done:  # a refined core was never overwritten by a coarse value
        region = session._clip(session.grid.tile(*key[1:]).core)
        np.testing.assert_array_equal(session.store.read(region)[0],
                                      full.store.read(region)[0])
    session.close()


def test_a_coarse_pass_that_finishes_after_a_pan_only_fills_pending_cores(plan, Counting):
    first = visible_box((200.0, 200.0), 1.0, CANVAS)
    second = visible_box((260.0, 260.0), 1.0, CANVAS)
    session = _session(plan, Counting)
    predictor = session.predictor
    panned = []

    def pan_during_the_coarse_batch(batch):
        if not panned:
            panned.append(session.request(second))
        return predictor(batch)

    session.coarse.predictor = pan_during_the_coarse_batch
    session.coarse._grids.clear()
    session.request(first)
    updates = list(session.serve(should_stop=lambda: session.pending == 0))
    assert panned and updates[0].preview
    second_cores = {c.key for c in _cores(session, second)}
    assert session.previewed == set() and second_cores <= session._done
    reference = _reference(plan, Counting, second)
    region = session.working_region(second)
    np.testing.assert_array_equal(session.store.read(region)[0],
                                  reference.store.read(region)[0])


def test_preview_off_and_small_views_go_straight_to_the_tiles(plan, Counting):
    box = visible_box((256.0, 256.0), 1.0, CANVAS)
    session = _session(plan, Counting, preview=False)
    session.request(box)
    updates = list(session.serve(should_stop=lambda: session.pending == 0))
    assert not any(u.preview for u in updates) and session.previewed == set()
    session.preview = True  # switched on: from the next view on
    session.request(visible_box((100.0, 400.0), 1.0, CANVAS))
    assert next(session.serve()).preview
    small = _session(plan, Counting)
    assert small.request(visible_box((264.0, 264.0), 1.0, (20, 20))) == 1  # one core
    assert not next(small.serve()).preview


def test_a_tile_classifier_gets_no_coarse_pass(slide, toy_spec, Counting):
    plan = plan_slide(slide, toy_spec(task="tile_classification"),
                      stain_normalization=False, tissue_only=False)
    session = LiveSession(plan, Counting(dense=False), "toy", batch_size=2, preview=True)
    session.request(visible_box((256.0, 256.0), 1.0, CANVAS))
    assert not next(session.serve()).preview


def test_coarse_pixels_map_onto_the_working_pixels_under_them(plan, Counting):
    coarse_pass = CoarsePass(plan, Counting(), "toy", max_tiles=4)
    found = coarse_pass.tiles_for(Region(100, 100, 400, 400))
    assert found is not None
    coarse, tiles = found
    assert len(tiles) <= 4 and coarse.factor in (2, 4, 8)
    # a working pixel's centre lies inside the coarse pixel it takes its value from
    rows = coarse_pass._indices(coarse, 0, 512, 0)
    centres = plan.translate[0] + plan.scale[0] * np.arange(512)
    lo = coarse.plan.translate[0] + coarse.plan.scale[0] * (rows - 0.5)
    assert np.all(lo <= centres) and np.all(centres < lo + coarse.plan.scale[0])
    # values: one coarse output spread over the working pixels it covers
    out = coarse.computer.compute(tiles[:1])[0]
    parts = list(coarse_pass.upsample(coarse, out, [Region(0, 0, 512, 512)]))
    [(part, values)] = parts
    assert values.shape == (2, *part.shape)
    y, x = part.y0, part.x0
    cy = coarse_pass._indices(coarse, y, y + 1, 0)[0]
    cx = coarse_pass._indices(coarse, x, x + 1, 1)[0]
    np.testing.assert_array_equal(values[:, 0, 0], out.values[:, cy - out.tile.window.y0,
                                                               cx - out.tile.window.x0])
