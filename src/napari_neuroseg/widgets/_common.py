"""Pieces every analysis widget shares: layer -> image record, model picker, workers, errors.

Nothing here computes on the GUI thread: :func:`start_worker` runs a function or generator in
napari's thread pool and relays its results, progress and errors back to the GUI thread.
"""

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QApplication, QComboBox, QLabel, QMainWindow

from napari_neuroseg.io import LazyImage
from napari_neuroseg.models.bundled import SYNTHETIC_WEIGHTS, weights_provenance
from napari_neuroseg.models.registry import PREFERRED_MODELS, ModelRegistry
from napari_neuroseg.models.source import ModelSource
from napari_neuroseg.widgets._worker_errors import reporting_runtime_errors

__all__ = [
    "FROM_FILE",
    "ModelPicker",
    "connect_events",
    "device_choices",
    "fit_panel",
    "forget_removed_layers",
    "image_from_layer",
    "image_layers",
    "image_modality",
    "lazy_level",
    "report_error",
    "start_worker",
    "stop_workers",
    "view_events",
    "warn",
    "watch_teardown",
    "widget_gone",
]

FROM_FILE = "checkpoint file..."
#: Chunk edge (pixels along y and x) given to layer data that is not a dask array and has no
#: chunks of its own: about a model tile, so reading a tile reads little more than the tile.
LAYER_CHUNK = 512
#: Longest wait (seconds) for a widget's workers when it closes or the viewer closes.
WORKER_WAIT_S = 10.0
#: A docked panel's width bounds (pixels): the canvas keeps the rest of the window.
PANEL_MAX_WIDTH = 480
PANEL_MIN_WIDTH = 300
#: Characters a drop-down shows before it elides (its list still shows whole items).
COMBO_MIN_CHARS = 12


def lazy_level(level: Any, rgb: bool) -> da.Array:
    """One level of a layer's data as a dask array, chunked for reading tiles.

    Dask arrays are kept as they are. Arrays with a chunk grid of their own (zarr) keep it.
    Anything else gets ``LAYER_CHUNK`` chunks along y and x: ``chunks="auto"`` would make
    128 MB chunks, and a batch of tiles computed together reads whole chunks (a 6688 x 6688
    chunk, 0.5 s, for eight 384-pixel tiles).

    Parameters
    ----------
    level : array-like
        Axes ``"...yx"``, or ``"...yxc"`` when ``rgb``.
    rgb : bool
        Whether the last axis holds the colour channels.
    """
    if isinstance(level, da.Array):
        return level
    native = getattr(level, "chunks", None)
    if (isinstance(native, tuple) and len(native) == level.ndim
            and all(isinstance(c, int) and c > 0 for c in native)):
        return da.from_array(level, chunks=native)
    n_yx = level.ndim - (1 if rgb else 0)
    chunks = [1] * (n_yx - 2) + [LAYER_CHUNK, LAYER_CHUNK] + ([-1] if rgb else [])
    return da.from_array(level, chunks=tuple(chunks[-level.ndim:]))


def image_from_layer(layer: Any) -> LazyImage:
    """The :class:`LazyImage` behind a napari image layer (no pixels read).

    Layers opened by this plugin carry their reader metadata (``metadata["neuroseg"]``:
    modality, axes, unit, source); other layers are described from their data: an RGB 2-D
    layer is a slide in µm, a 3-D one a volume in mm.
    """
    meta = dict(layer.metadata.get("neuroseg", {}))
    data = list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]
    rgb = bool(getattr(layer, "rgb", False))
    levels = [lazy_level(level, rgb) for level in data]
    ndim = levels[0].ndim - (1 if rgb else 0)
    axes = meta.get("axes") or ("zyx"[-ndim:] + ("c" if rgb else ""))
    if "c" in axes and levels[0].ndim == len(axes) - 1:  # one channel of a split stack
        axes = axes.replace("c", "")
    modality = meta.get("modality") or ("slide" if rgb and ndim == 2 else
                                        "MR" if ndim == 3 else "slide")
    n_spatial = len(axes.replace("c", ""))
    scale = tuple(float(s) for s in layer.scale[-n_spatial:])
    translate = tuple(float(t) for t in layer.translate[-n_spatial:])
    extra = {k: v for k, v in meta.items()
             if k not in ("source", "modality", "axes", "unit", "warnings")}
    return LazyImage(levels=levels, axes=axes, scale=scale,
                     unit=meta.get("unit") or ("um" if modality == "slide" else "mm"),
                     name=layer.name, modality=modality, source=meta.get("source") or layer.name,
                     translate=translate, metadata=extra)


def image_layers(viewer: Any, modalities: Sequence[str] | None = None) -> list[Any]:
    """The viewer's image layers, optionally only those of the given modalities."""
    out = []
    for layer in viewer.layers:
        if layer.__class__.__name__ != "Image":
            continue
        if modalities is None or image_modality(layer) in modalities:
            out.append(layer)
    return out


def image_modality(layer: Any) -> str:
    """``slide``, ``CT``, ``MR``... of a layer (from its reader metadata, else its shape)."""
    meta = layer.metadata.get("neuroseg", {})
    if meta.get("modality"):
        return str(meta["modality"])
    rgb = bool(getattr(layer, "rgb", False))
    return "slide" if rgb else ("MR" if layer.ndim == 3 else "slide")


def device_choices() -> list[str]:
    """``auto`` and ``cpu``, plus ``cuda`` when a GPU is visible."""
    import torch

    return ["auto", "cpu", *(["cuda"] if torch.cuda.is_available() else [])]


class ModelPicker(Container):
    """A registry model (filtered by task) or a checkpoint file, and the device to run it on.

    At first the picker chooses the first of ``preferred`` that is offered and ships trained
    weights, else the first model offered that ships trained weights (random weights only
    when none does). A registry model runs the weights that ship with the package when
    there are some, else random weights; ``provenance`` (a label under the model) says
    which, and ``warning`` says what the user must know (random or synthetic-data weights).

    Parameters
    ----------
    tasks : sequence of str
        Spec tasks offered (``semantic_segmentation``, ``slice_classification``...).
    names : sequence of str, optional
        Restrict to these registry names.
    registry : ModelRegistry, optional
        Where the models and their bundled checkpoints come from (default: a new one).
    preferred : sequence of str, optional
        Registry names to choose first, in order (default:
        :data:`~napari_neuroseg.models.PREFERRED_MODELS`, the declared models that
        cross-validated best).
    """

    def __init__(self, tasks: Sequence[str], names: Sequence[str] | None = None,
                 registry: ModelRegistry | None = None,
                 preferred: Sequence[str] = PREFERRED_MODELS) -> None:
        super().__init__(labels=True)
        self.registry = registry if registry is not None else ModelRegistry()
        self.tasks = tuple(tasks)
        choices = [n for n in self.registry.names() if self.registry.get(n).task in tasks
                   and (names is None or n in names)]
        trained = [n for n in choices if self.registry.checkpoint(n) is not None]
        first = [n for n in preferred if n in trained] + trained
        self.model = ComboBox(label="Model", choices=[*choices, FROM_FILE],
                              value=(first or choices or [FROM_FILE])[0])
        self.provenance = Label(label="Weights", value="")
        self.file = FileEdit(label="Checkpoint", mode="r", filter="*.safetensors", visible=False)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.amp = CheckBox(text="Mixed precision on GPU", value=True)
        self.extend([self.model, self.provenance, self.file, self.device, self.amp])
        self.model.changed.connect(self._model_changed)
        self.file.changed.connect(self._show_provenance)
        self._model_changed(self.model.value)

    def _model_changed(self, value: str) -> None:
        self.file.visible = value == FROM_FILE
        self._show_provenance()

    def _show_provenance(self, *_: Any) -> None:
        self.provenance.value = self.weights_provenance()

    def checkpoint(self) -> Path | None:
        """The weights file that runs: the chosen file or the model's bundled checkpoint."""
        if self.model.value == FROM_FILE:
            path = Path(self.file.value)
            return path if path.is_file() else None
        return self.registry.checkpoint(self.model.value)

    def weights_provenance(self) -> str:
        """Where the chosen weights come from (the ``provenance`` label's text)."""
        from napari_neuroseg.models.checkpoint import read_spec

        if self.model.value != FROM_FILE:
            return self.registry.provenance(self.model.value)
        path = self.checkpoint()
        if path is None:
            return "choose a checkpoint file (.safetensors + .json)"
        try:
            return weights_provenance(read_spec(path), path)
        except (OSError, ValueError) as err:
            return f"unreadable checkpoint: {err}"

    def source(self) -> ModelSource:
        """What is chosen, as a :class:`ModelSource`: a checkpoint file, a model's bundled
        checkpoint, or (a registry model without one) random weights."""
        if self.model.value == FROM_FILE:
            path = Path(self.file.value)
            if not path.is_file():
                raise ValueError(f"{path}: choose a checkpoint file (.safetensors + .json)")
            return ModelSource(str(path), device=self.device.value)
        bundled = self.registry.checkpoint(self.model.value)
        if bundled is not None:
            return ModelSource(str(bundled), device=self.device.value)
        return ModelSource(self.model.value, device=self.device.value, random_weights=True)

    def use_checkpoint(self, path: str | Path) -> bool:
        """Choose checkpoint ``path`` if its model does this picker's task; True when chosen.

        The Train widget hands every new checkpoint to the docked widgets through this, so a
        live analysis switches to the retrained model (its settings change starts a new
        session).
        """
        from napari_neuroseg.models.checkpoint import read_sidecar

        try:
            task = read_sidecar(path)["spec"]["task"]
        except (OSError, ValueError, KeyError):
            return False
        if task not in self.tasks:
            return False
        self.model.value = FROM_FILE
        self.file.value = Path(path)
        return True

    @property
    def random_weights(self) -> bool:
        """Whether the choice runs random weights (a registry model that ships none)."""
        return self.model.value != FROM_FILE and self.registry.checkpoint(self.model.value) is None

    @property
    def warning(self) -> str:
        """What the user must know about the chosen weights ("" for trained, real-data ones):
        random weights (a registry model that ships none) or weights trained on synthetic
        data."""
        name = self.model.value
        if self.random_weights:
            return (f"{name}: no trained weights ship with it, running with random weights "
                    "(outputs mean nothing; choose a checkpoint file)")
        if self.weights_provenance() == SYNTHETIC_WEIGHTS:
            label = Path(self.file.value).name if name == FROM_FILE else name
            return f"{label}: {SYNTHETIC_WEIGHTS}"
        return ""


def report_error(err: BaseException, where: str = "") -> None:
    """Show an error as a napari notification (never raised into the event loop)."""
    prefix = f"{where}: " if where else ""
    show_error(f"{prefix}{type(err).__name__}: {err}" if not isinstance(err, ValueError)
               else f"{prefix}{err}")


def fit_panel(container: Container, max_width: int = PANEL_MAX_WIDTH,
              min_width: int = PANEL_MIN_WIDTH, wrap_names: bool = True) -> Container:
    """Keep a docked panel narrow enough for the canvas, whatever text it shows.

    Text labels wrap (a status line of a Nuclei run once widened the dock until the canvas
    was 0 px wide) and show their whole text as a tooltip; drop-downs size to a few
    characters, not their longest item; the panel is ``min_width`` to ``max_width`` pixels
    wide (so field names never vanish). ``wrap_names=False`` keeps field names on one line
    (a form that sized its own name column). Applies to the widgets
    inside ``container`` now; call it again after adding widgets.

    Returns
    -------
    Container
        ``container``, for chaining.
    """
    native = container.native
    native.setMinimumWidth(min(min_width, max_width))
    native.setMaximumWidth(max_width)
    if wrap_names:
        for qlabel in native.findChildren(QLabel):
            qlabel.setWordWrap(True)  # field names too: a long one takes two lines
    for label in _widgets(container, Label):
        label.native.setWordWrap(True)
        label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.native.installEventFilter(_FULL_TEXT_TIP)
    short = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
    for combo in native.findChildren(QComboBox):
        if combo.sizeAdjustPolicy() != short:  # (a widget may have sized its own)
            combo.setSizeAdjustPolicy(short)
            combo.setMinimumContentsLength(COMBO_MIN_CHARS)
    return container


class _FullTextTip(QObject):
    """Event filter on wrapped labels: the tooltip is the whole current text (set when it is
    asked for), and the label is at least as tall as its wrapped text at its width (a form
    nested in another, such as the model picker, otherwise clipped the last lines)."""

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if not isinstance(obj, QLabel):
            return False
        kind = event.type()
        if kind == QEvent.Type.ToolTip:
            obj.setToolTip(obj.text())
        elif kind == QEvent.Type.Resize:
            need = obj.heightForWidth(obj.width())
            if need > 0 and need != obj.minimumHeight():
                obj.setMinimumHeight(need)
        return False


_FULL_TEXT_TIP = _FullTextTip()


def _widgets(container: Any, kind: type) -> list[Any]:
    """Every magicgui widget of ``kind`` inside ``container``, nested containers included."""
    found = []
    for widget in container:
        if isinstance(widget, kind):
            found.append(widget)
        if isinstance(widget, Container):
            found.extend(_widgets(widget, kind))
    return found


def widget_gone(widget: Any) -> bool:
    """Whether a magicgui widget was closed (``_closed``) or its Qt widget deleted."""
    if getattr(widget, "_closed", False):
        return True
    native = getattr(widget, "native", None)
    if native is None:
        return False
    try:
        from qtpy import sip

        return bool(sip.isdeleted(native))
    except ImportError:  # PySide
        import shiboken6

        return not shiboken6.isValid(native)


def _owner(callbacks: Sequence[Any]) -> Any:
    """The widget behind the first bound-method callback (None for plain functions)."""
    for callback in callbacks:
        owner = getattr(callback, "__self__", None)
        if owner is not None and hasattr(owner, "native"):
            return owner
    return None


def start_worker(func: Callable[..., Any], *args: Any,
                 on_yield: Callable[[Any], None] | None = None,
                 on_done: Callable[[Any], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 on_finish: Callable[[], None] | None = None, owner: Any = None,
                 **kwargs: Any) -> Any:
    """Run ``func`` (a function or a generator function) in napari's thread pool.

    Connecting ``errored`` keeps napari from re-raising the error on the GUI thread; without
    ``on_error`` it is shown as a notification. A ``RuntimeError`` (what torch raises) arrives
    as an error too (superqt would swallow it and never finish the worker:
    :mod:`~napari_neuroseg.widgets._worker_errors`). Results that arrive after the ``owner`` widget
    (by default the widget of the first bound-method callback) was closed or deleted are
    dropped, so a worker that outlives its widget never touches deleted Qt objects.

    Returns
    -------
    napari.qt.threading.WorkerBase
        Started; ``quit()`` asks a generator worker to stop at its next ``yield``.
    """
    owner = owner if owner is not None else _owner([on_yield, on_done, on_error, on_finish])

    def guarded(callback: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if callback is None or owner is None:
            return callback

        def call(*values: Any) -> Any:
            if widget_gone(owner):
                return None
            return callback(*values)

        return call

    connect: dict[str, Any] = {"errored": guarded(on_error or report_error)}
    if on_yield is not None:
        connect["yielded"] = guarded(on_yield)
    if on_done is not None:
        connect["returned"] = guarded(on_done)
    if on_finish is not None:
        connect["finished"] = guarded(on_finish)
    return create_worker(reporting_runtime_errors(func), *args, _connect=connect, **kwargs)


def warn(message: str) -> None:
    """A warning notification (for a model without weights, a mismatch worth knowing)."""
    show_warning(message)


def forget_removed_layers(owner: Any, viewer: Any, *attributes: str) -> None:
    """Set each of ``owner``'s layer ``attributes`` that is no longer in the viewer to None
    (the user deleted a result layer: the next result makes a new one)."""
    layers = list(viewer.layers)
    for name in attributes:
        layer = getattr(owner, name)
        if layer is not None and layer not in layers:
            setattr(owner, name, None)


def view_events(viewer: Any, on_camera: Callable[..., Any],
                on_layers: Callable[..., Any]) -> list[tuple[Any, Any]]:
    """The (event, callback) pairs of a widget that follows the view and the layer list.

    Camera centre and zoom and the canvas size call ``on_camera`` (the visible box changed);
    layers added or removed call ``on_layers``. Give them to :func:`connect_events`.
    """
    camera = viewer.scene.camera
    return [(camera.events.center, on_camera), (camera.events.zoom, on_camera),
            (viewer.canvas.events.size, on_camera),
            (viewer.layers.events.inserted, on_layers),
            (viewer.layers.events.removed, on_layers)]


def stop_workers(workers: Sequence[Any], timeout: float = WORKER_WAIT_S) -> bool:
    """Ask ``workers`` to stop and wait for them (on the GUI thread), at most ``timeout`` s.

    A widget calls this when it closes or the viewer closes, so that no worker outlives the
    Qt objects its results go to. ``None`` entries are skipped. A generator worker stops at its
    next ``yield``; a function worker is waited for (its own stop flag should be set first).

    Returns
    -------
    bool
        True when every worker has finished.
    """
    alive = [w for w in workers if w is not None]
    for worker in alive:
        with contextlib.suppress(RuntimeError, AttributeError):
            worker.quit()
    deadline = time.monotonic() + timeout
    while any(getattr(w, "is_running", False) for w in alive):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class _TeardownWatcher(QObject):
    """Calls a widget's teardown once, when napari is done with the widget.

    napari never calls a docked widget's ``close()``: its title-bar X unparents the widget
    (``setParent(None)``) and deletes the dock; closing the window closes the QtViewer and
    the main window. This event filter sees those moments on live objects (never a
    ``destroyed`` signal of a deleted one) and runs ``callback`` on the GUI thread:

    - the widget is unparented after having been docked: on the next event-loop turn (napari
      is still inside its removal);
    - the main window (found when the widget is first shown in it) is closed by code, or
      hidden after the user closed it (a close the user cancels in napari's dialog does
      nothing), or the application quits: at once, before Qt deletes anything.

    It has no Qt parent; :data:`_WATCHERS` keeps it until it fires.
    """

    def __init__(self, native: Any, callback: Callable[[], None]) -> None:
        super().__init__()
        self._native, self._callback = native, callback
        self._docked = native.parent() is not None
        self._windows: list[Any] = []
        native.installEventFilter(self)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.fire)
        _WATCHERS.add(self)

    def _watch_main_window(self) -> None:
        top = self._native.window()
        if isinstance(top, QMainWindow) and top not in self._windows:
            top.installEventFilter(self)
            self._windows.append(top)

    def eventFilter(self, obj: Any, event: Any) -> bool:
        kind = event.type()
        if obj is self._native:
            if kind == QEvent.Type.ParentChange:
                if self._native.parent() is not None:
                    self._docked = True
                elif self._docked:
                    QTimer.singleShot(0, self.fire)
            elif kind == QEvent.Type.Show:
                self._watch_main_window()
        elif kind == QEvent.Type.Close and not event.spontaneous():
            self.fire()
        elif kind == QEvent.Type.Hide and not event.spontaneous() and not obj.isMinimized():
            self.fire()
        return False

    def fire(self) -> None:
        """Run the callback once and let go of everything."""
        callback = self.forget()
        if callback is not None:
            callback()

    def forget(self) -> Callable[[], None] | None:
        """Stop watching and let go of everything (the widget was closed by code); returns
        the callback when it had not run yet."""
        callback, self._callback = self._callback, None
        if callback is None:
            return None
        for obj in (self._native, *self._windows):
            with contextlib.suppress(RuntimeError):
                obj.removeEventFilter(self)
        app = QApplication.instance()
        if app is not None:
            with contextlib.suppress(RuntimeError, TypeError):
                app.aboutToQuit.disconnect(self.fire)
        self._native, self._windows = None, []
        _WATCHERS.discard(self)
        return callback


#: Watchers not fired yet (they have no Qt parent: this keeps them alive).
_WATCHERS: set[_TeardownWatcher] = set()


def watch_teardown(native: Any, callback: Callable[[], None]) -> Callable[[], Any]:
    """Run ``callback`` once when napari removes the docked widget ``native`` or closes its
    window (see :class:`_TeardownWatcher`); the callback must be idempotent, since the
    widget's own ``close()`` may run it as well. Returns the function that stops watching
    (a widget closed by code calls it, so the watcher does not keep it alive)."""
    return _TeardownWatcher(native, callback).forget


def connect_events(native: Any, events: list[tuple[Any, Any]],
                   on_teardown: Callable[[], None] | None = None) -> Callable[..., None]:
    """Connect every ``(event, callback)`` and return the function that undoes it once.

    The returned function disconnects the events and stops watching ``native``; calling it
    again does nothing. It runs, or ``on_teardown`` runs instead (a widget's teardown, which
    should call it), when napari removes the docked widget ``native`` or closes the viewer
    (:func:`watch_teardown`).
    """
    pending = events
    for event, callback in pending:
        event.connect(callback)

    def disconnect(*_: Any) -> None:
        while pending:
            event, callback = pending.pop()
            try:
                event.disconnect(callback)
            except (TypeError, ValueError, RuntimeError):
                pass  # already gone with the viewer
        forget()

    forget = watch_teardown(native, on_teardown or disconnect)
    return disconnect
