"""The Open widget: what a file dialog cannot say.

Pick a file or folder; the widget inspects it in a background thread (DICOM series of a folder,
a slide's MPP) and shows its metadata. Then choose the series, an MPP override for a slide
without one, or tilt-corrected resampling for a CT, and open it as lazy layers.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    TextEdit,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager, show_warning

from napari_neuroseg.io import LazyImage, detect_format, open_image
from napari_neuroseg.io._describe import describe
from napari_neuroseg.widgets._panel import fit_panel

if TYPE_CHECKING:
    import napari

ALL_SERIES = "all series"


def inspect_path(path: Path) -> dict[str, Any]:
    """Find out what ``path`` is and read its metadata, without reading pixel data.

    Runs in a worker thread.

    Returns
    -------
    dict
        ``format``, ``images`` (the opened records, for their metadata) and ``series``
        (``(label, series_uid)`` pairs for a DICOM source; empty otherwise).
    """
    fmt = detect_format(path)
    if fmt is None:
        raise ValueError(f"{path}: not a slide, DICOM series, NIfTI, TIFF stack or LGG folder")
    images = open_image(path)
    series = []
    if fmt == "dicom":
        for image in images:
            label = f"{image.name} [{image.modality}, {image.shape[0]} slices]"
            series.append((label, image.metadata["series_uid"]))
    return {"format": fmt, "series": series, "images": images}


def warning_text(image: LazyImage, message: str) -> str:
    """``message`` prefixed with the image's name, unless it already starts with it."""
    return message if message.startswith(f"{image.name}:") else f"{image.name}: {message}"


class OpenWidget(Container):
    """Open an image with the choices a file dialog cannot offer.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer the layers are added to.
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._worker = None
        self.folder = CheckBox(text="Open a folder (DICOM series, LGG patient)", value=False)
        self.path = FileEdit(label="Path", mode="r")
        self.series = ComboBox(label="Series", choices=[ALL_SERIES], enabled=False)
        self.mpp = FloatSpinBox(
            label="MPP override (µm/px, 0 = file)", min=0.0, max=100.0, step=0.01, value=0.0
        )
        self.resample = CheckBox(text="Resample to a uniform, tilt-corrected grid", value=False)
        self.spacing = FloatSpinBox(
            label="Slice spacing (mm, 0 = median)", min=0.0, max=50.0, step=0.1, value=0.0
        )
        self.open_button = PushButton(text="Open", enabled=False)
        self.status = Label(value="Choose a file or folder.")
        self.info = TextEdit(label="Metadata", value="")
        self.info.read_only = True
        self.extend(
            [
                self.folder,
                self.path,
                self.series,
                self.mpp,
                self.resample,
                self.spacing,
                self.open_button,
                self.status,
                self.info,
            ]
        )
        self._series_ids: dict[str, str] = {}
        self._inspected: tuple[Path, list[LazyImage]] | None = None
        self._notified: set[str] = set()  # reader warnings already shown for this path
        self._records_from = len(notification_manager.records)
        self._set_format(None)
        self.folder.changed.connect(self._on_folder_toggled)
        self.path.changed.connect(self._on_path_changed)
        self.open_button.changed.connect(self._on_open)
        fit_panel(self)

    # -- reactions ----------------------------------------------------------------------
    def _on_folder_toggled(self, value: bool) -> None:
        self.path.mode = "d" if value else "r"

    def _set_format(self, fmt: str | None) -> None:
        self.mpp.enabled = fmt == "slide"
        self.resample.enabled = fmt == "dicom"
        self.spacing.enabled = fmt == "dicom"
        self.series.enabled = fmt == "dicom"
        self.open_button.enabled = fmt is not None

    def _on_path_changed(self, value: Path) -> None:
        path = Path(value)
        if not path.exists() or str(value) in ("", "."):
            return
        self._set_format(None)
        self._notified.clear()
        self._records_from = len(notification_manager.records)
        self.status.value = f"Inspecting {path.name} ..."
        self._start(inspect_path, path, on_done=self._show_inspection)

    def _show_inspection(self, info: dict[str, Any]) -> None:
        self._inspected = (Path(self.path.value), info["images"])
        self._series_ids = dict(info["series"])
        choices = [ALL_SERIES, *self._series_ids] if info["series"] else [ALL_SERIES]
        self.series.choices = choices
        self.series.value = ALL_SERIES
        self._set_format(info["format"])
        self.info.value = "\n\n".join(describe(image) for image in info["images"])
        self.status.value = f"{info['format']}: ready to open"

    def options(self) -> dict[str, Any]:
        """The keyword arguments :func:`napari_neuroseg.io.open_image` gets from the form."""
        opts: dict[str, Any] = {}
        if self.mpp.enabled and self.mpp.value > 0:
            opts["mpp"] = float(self.mpp.value)
        if self.series.enabled and self.series.value != ALL_SERIES:
            opts["series"] = self._series_ids[self.series.value]
        if self.resample.enabled and self.resample.value:
            opts["resample"] = True
            if self.spacing.value > 0:
                opts["spacing"] = float(self.spacing.value)
        return opts

    def _on_open(self) -> None:
        path = Path(self.path.value)
        options = self.options()
        if not options and self._inspected is not None and self._inspected[0] == path:
            self._add_layers(self._inspected[1])  # what inspecting read is what opening reads
            return
        self.status.value = f"Opening {path.name} ..."
        self._start(open_image, path, on_done=self._add_layers, **options)

    def _add_layers(self, images: list[LazyImage]) -> None:
        from napari_neuroseg.io import to_layer_data

        for (data, kwargs, layer_type), image in zip(to_layer_data(images), images, strict=True):
            getattr(self._viewer, f"add_{layer_type}")(data, **kwargs)
            for message in image.warnings:
                self._notify(message, warning_text(image, message))
        self.info.value = "\n\n".join(describe(image) for image in images)
        self.status.value = f"Opened {len(images)} image(s)"

    # -- background work ----------------------------------------------------------------
    def _start(self, func, *args, on_done, **kwargs) -> None:
        # napari's workers relay errors to its notifications; connecting ``errored`` here
        # keeps them from being re-raised on the GUI thread.
        # Readers that warn through :mod:`warnings` (DICOM, slides) reach ``warned``; the
        # image's own warnings list repeats them, so each is shown once (see ``_notify``).
        connect = {"returned": on_done, "errored": self._on_error, "warned": self._on_warned}
        self._worker = create_worker(func, *args, _connect=connect, **kwargs)

    def _on_warned(self, args: tuple) -> None:
        message = args[0] if isinstance(args[0], str) else str(args[0].args[0])
        self._notify(message, message)

    def _notify(self, message: str, text: str) -> None:
        """Show ``text`` for a reader warning ``message`` unless it was shown already.

        A warning raised in a worker thread sometimes bypasses ``warned`` and reaches napari's
        notifications through the global ``showwarning`` hook (the worker's
        ``catch_warnings`` is not thread-safe), so napari's records are checked too.
        """
        if message in self._notified:
            return
        self._notified.add(message)
        shown = {str(n.message) for n in notification_manager.records[self._records_from:]}
        if message not in shown and text not in shown:
            show_warning(text)

    def _on_error(self, err: Exception) -> None:
        self.status.value = "Failed"
        self.info.value = str(err)
