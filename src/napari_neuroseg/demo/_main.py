"""The demo's command line: which scenes, where the screenshots go, the summary lines."""

import argparse
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import napari

from napari_neuroseg.demo._follow import follow_scene
from napari_neuroseg.demo._scenes import (
    SceneResult,
    ct_scene,
    live_scene,
    mri_scene,
    slide_scene,
)
from napari_neuroseg.demo._viewer import (
    DemoError,
    new_viewer,
    save_rgba,
    save_small,
    screenshot,
)

SceneFunction = Callable[[napari.Viewer, Path | None, float], SceneResult]

SCENES: dict[str, SceneFunction] = {
    "slide": slide_scene, "slide-live": live_scene, "ct": ct_scene, "mri": mri_scene,
    "gbm-live": partial(live_scene, model="gbm-tissue-8"), "slide-follow": follow_scene}
"""Scene -> the function that opens, analyses and captions it."""

DEFAULT_SCENES = ("slide", "ct", "mri", "gbm-live")
"""Run unless ``--only`` says otherwise. ``slide-live`` (the Analyse widget live on a 0.6 mm
view of CMU-1) and ``slide-follow`` (the Nuclei widget following the view: its quick preview,
then HoVer-Net) are added by ``--live``."""
LIVE_SCENES = ("slide-live", "slide-follow")

REAL_ONLY = ("gbm-live",)
"""Scenes that run on their real file alone (no synthetic sample, no ``--slide``):
``gbm-live`` is the 8-class GBM tissue model live on a whole TCGA section."""

REAL_FILES = {"slide": "wsi/cmu-1-small-region.svs",
              "slide-live": "wsi/cmu-1-small-region.svs",
              "slide-follow": "wsi/cmu-1-small-region.svs", "ct": "ct_head_ge",
              "mri": "lgg_mri_kaggle3m", "gbm-live": "wsi/tcga-cr-7395-01a-01-ts1.svs"}
"""Scene -> the real sample under ``--data`` (the layout of ``../shared/data``)."""

TITLES = {"slide": "slide (Nuclei)", "slide-live": "slide (Analyse, live)",
          "slide-follow": "slide (Nuclei, following the view)", "ct": "head CT",
          "mri": "brain MRI", "gbm-live": "slide (Analyse live, gbm-tissue-8)"}


def plan(data: Path | None, own: dict[str, str | None],
         only: Sequence[str] | None = None) -> list[tuple[str, str, Path | None]]:
    """The scenes to run: ``(screenshot stem, modality, file or None for the sample)``.

    A modality's own file (``--slide`` ...) replaces its sample; ``data`` adds a ``-real``
    scene for every real sample found there (the only run of a :data:`REAL_ONLY` scene).
    """
    modalities = [key for key in SCENES if key in (DEFAULT_SCENES if only is None else only)]
    scenes: list[tuple[str, str, Path | None]] = []
    for key in modalities:
        if key in REAL_ONLY:
            continue
        path = own.get(key)
        scenes.append((key, key, Path(path) if path else None))
    if data is not None:
        for key in modalities:
            path = data / REAL_FILES[key]
            if path.exists():
                scenes.append((f"{key}-real", key, path))
            else:
                print(f"demo: {path} not found: no {key}-real scene")
    return scenes


def summary_line(stem: str, result: SceneResult, seconds: float) -> str:
    """``demo: ct-real.png brain_ml=1494 ... (12.3 s) | caption's weights``."""
    numbers = " ".join(f"{key}={value}" for key, value in result.numbers.items())
    return f"demo: {stem}.png {numbers} ({seconds:.1f} s) | {result.weights}"


def run_scenes(scenes: Sequence[tuple[str, str, Path | None]], out: Path | None,
               timeout: float = 120.0, keep_open: bool = False,
               docs_images: Path | None = None) -> dict[str, SceneResult]:
    """Run each scene in its own viewer; screenshot to ``out`` (when given) and print a line.

    Parameters
    ----------
    scenes : sequence
        From :func:`plan`.
    out : pathlib.Path or None
        Folder of the screenshots (``<stem>.png``); None: none taken.
    timeout : float
        Seconds each widget step may take.
    keep_open : bool
        Leave the viewers open (interactive demo) instead of closing each after its shot.
    docs_images : pathlib.Path or None
        Also write a small copy of each screenshot there (``docs/images``).

    Returns
    -------
    dict
        Screenshot stem -> :class:`SceneResult`, for the scenes that succeeded.

    Raises
    ------
    DemoError
        After running every scene, if any failed (the message lists them).
    """
    results: dict[str, SceneResult] = {}
    failures: list[str] = []
    for stem, key, path in scenes:
        start = time.monotonic()
        source = path.name if path is not None else "synthetic sample"
        viewer = new_viewer(f"napari-neuroseg demo: {TITLES[key]} ({source})")
        try:
            result = SCENES[key](viewer, path, timeout)
            if out is not None:
                shot = screenshot(viewer, out / f"{stem}.png")
                shots = [shot] + [save_rgba(image, out / f"{stem}-{suffix}.png")
                                  for suffix, image in result.shots.items()]
                if docs_images is not None:
                    for path_ in shots:
                        save_small(path_, docs_images / path_.name)
            results[stem] = result
            print(summary_line(stem, result, time.monotonic() - start), flush=True)
        except DemoError as err:
            failures.append(f"{stem}: {err}")
            print(f"demo: {stem}: FAILED: {err}", flush=True)
        finally:
            if not keep_open:
                viewer.close()
    if failures:
        raise DemoError("; ".join(failures))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (1 when a scene failed or timed out)."""
    parser = argparse.ArgumentParser(
        prog="python -m napari_neuroseg.demo",
        description="The plugin's widgets run on a slide, a CT and an MRI (synthetic samples, "
        "plus the real files of --data).")
    parser.add_argument("--out", type=Path, default=Path("demo-output"),
                        help="folder of the screenshots (with --exit)")
    parser.add_argument("--exit", action="store_true", help="save screenshots, then quit")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder laid out like ../shared/data: adds the real "
                        + ", ".join(sorted(set(REAL_FILES.values()))))
    parser.add_argument("--only", nargs="+", choices=list(SCENES), default=None,
                        help="run only these scenes")
    parser.add_argument("--docs-images", type=Path, default=None,
                        help="with --exit: also write small copies of the screenshots here")
    parser.add_argument("--live", action="store_true",
                        help="add the slide-live and slide-follow scenes (the Analyse widget "
                        "live on the view; the Nuclei widget following it, preview first)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds each analysis step may take (default 120)")
    for key in ("slide", "ct", "mri"):
        parser.add_argument(f"--{key}", default=None, help=f"open this {key} instead of the sample")
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder")
    own = {key: getattr(args, key.split("-")[0]) for key in SCENES if key not in REAL_ONLY}
    only = args.only or ([*DEFAULT_SCENES, *LIVE_SCENES] if args.live else None)
    scenes = plan(args.data, own, only)
    try:
        run_scenes(scenes, args.out if args.exit else None, args.timeout,
                   keep_open=not args.exit, docs_images=args.docs_images)
    except DemoError as err:
        print(f"demo: failed: {err}", flush=True)
        return 1
    if not args.exit:
        napari.run()
    return 0
