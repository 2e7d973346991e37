"""Workers and viewer events of the analysis widgets: run off the GUI thread, report errors,
stop and wait on close, disconnect when napari removes the panel.

Nothing here computes on the GUI thread: :func:`start_worker` runs a function or generator in
napari's thread pool and relays its results, progress and errors back to the GUI thread.
"""

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication, QMainWindow

from napari_neuroseg.widgets._worker_errors import reporting_runtime_errors

__all__ = [
    "WORKER_WAIT_S",
    "connect_events",
    "forget_removed_layers",
    "report_error",
    "start_worker",
    "stop_workers",
    "view_events",
    "warn",
    "watch_teardown",
    "widget_gone",
]

#: Longest wait (seconds) for a widget's workers when it closes or the viewer closes.
WORKER_WAIT_S = 10.0


def report_error(err: BaseException, where: str = "") -> None:
    """Show an error as a napari notification (never raised into the event loop)."""
    prefix = f"{where}: " if where else ""
    show_error(f"{prefix}{type(err).__name__}: {err}" if not isinstance(err, ValueError)
               else f"{prefix}{err}")


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
