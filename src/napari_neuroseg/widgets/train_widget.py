"""The Train widget: retrain a model on an exported dataset in a separate process.

Pick the task (set from the dataset's manifest when a dataset folder is chosen), the dataset
folder, the checkpoint to start from (prefilled from the current model when a layer says which
checkpoint made it), the run folder, epochs, device and extra task options as YAML. The exact
``python -m training ...`` command is shown, ready to copy to a GPU machine. "Train" launches
it as a child process (:class:`napari_neuroseg.annotate.trainjob.TrainJob`); a generator worker
streams its JSON events into a napari progress bar (epochs done of N), the widget's progress
bar, a log panel and live curves (losses and validation metrics per epoch, the starting
model's values as dashed lines). "Cancel" kills the run's process group.

When the run finishes, its best checkpoint is compared with the model it started from on the
same validation split (:func:`~napari_neuroseg.annotate.start_comparison.compare_with_start`).
Only a model at least as good is handed over: it becomes the next run's starting point, the
docked analysis widgets switch to it, and every callable in ``on_checkpoint`` is called with its
path. A worse model, or one that cannot be compared (trained from scratch), is offered instead:
the two numbers side by side and a "Use the new model anyway" button.
"""

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)
from napari.utils import progress as napari_progress

from napari_neuroseg.annotate.start_comparison import StartComparison, compare_with_start
from napari_neuroseg.annotate.trainjob import TASKS, TrainJob, dataset_task
from napari_neuroseg.widgets._model_picker import ModelPicker, device_choices
from napari_neuroseg.widgets._panel import fit_panel
from napari_neuroseg.widgets._train_curves import TrainingCurves, curve_values
from napari_neuroseg.widgets._workers import (
    connect_events,
    report_error,
    start_worker,
    stop_workers,
)

if TYPE_CHECKING:
    import napari

LOG_LINES = 5000
TEXT_BOX_HEIGHT = 90  # px of the options, command and log boxes (each scrolls)
_QUIET = {"event", "epoch", "epochs", "seconds", "lr"}


def stream_events(job: TrainJob) -> Iterator[dict[str, Any]]:
    """Start ``job`` and yield its events (the generator worker's body)."""
    yield from job.events()


def event_line(event: dict[str, Any]) -> str:
    """One log line for an ``epoch_end``, ``resume``, ``finished``... event."""
    kind = event.get("event")
    if kind == "epoch_end":
        values = " ".join(f"{k} {v:.4g}" for k, v in event.items()
                          if k not in _QUIET and isinstance(v, (int, float))
                          and not isinstance(v, bool))
        return (f"epoch {event['epoch'] + 1}/{event['epochs']}: {values} "
                f"({float(event.get('seconds') or 0.0):.1f} s)")
    if kind == "resume":
        return f"resuming at epoch {event['epoch'] + 1}"
    if kind == "baseline":
        values = " ".join(f"{k} {v:.4g}" for k, v in curve_values(event).items())
        return f"starting model: {values}"
    if kind == "finished":
        return f"finished: best checkpoint {event.get('best') or '(none written)'}"
    if kind == "failed":
        return f"failed: {event.get('error')}"
    if kind == "cancelled":
        return "cancelled"
    return str(event)


def layer_checkpoint(layers: Sequence[Any]) -> Path | None:
    """The checkpoint that made a result layer, if a layer records one that exists.

    Result layers may carry ``metadata["neuroseg"]["checkpoint"]`` (or a ``"model"`` that is
    a ``.safetensors`` path); the selected layers are looked at first, then the newest.
    """
    for layer in layers:
        meta = getattr(layer, "metadata", {}).get("neuroseg", {})
        for key in ("checkpoint", "model"):
            value = meta.get(key)
            if isinstance(value, str) and value.endswith(".safetensors") and \
                    Path(value).is_file():
                return Path(value)
    return None


class TrainWidget(Container):
    """Launch ``python -m training`` on an export, follow it, hand over the new checkpoint.

    Parameters
    ----------
    viewer : napari.Viewer
        Its layers may say which checkpoint made them (prefills "Start from").

    Attributes
    ----------
    on_checkpoint : list of callable
        Called with the best checkpoint's path when it is handed over: when a run finishes
        with a model at least as good as its start, or when the user chooses it anyway.
    comparison : StartComparison or None
        The last finished run's model against its start.
    offered : pathlib.Path or None
        A finished run's checkpoint that was not handed over (the user may still take it).
    launcher : sequence of str or None
        The argv prefix of the training command (None: ``python -m training``; tests swap it).
    job : TrainJob or None
        The current (or last) run.
    """

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.on_checkpoint: list[Callable[[Path], Any]] = []
        self.launcher: Sequence[str] | None = None
        self.job: TrainJob | None = None
        self.comparison: StartComparison | None = None
        self.offered: Path | None = None
        self._auto_init: Path | None = None  # "Start from" as filled from a layer
        self.worker: Any = None
        self._pbar: Any = None
        self._closed = False
        self.task = ComboBox(label="Task", choices=list(TASKS), value="mri")
        self.data = FileEdit(label="Dataset folder", mode="d", nullable=True)
        self.init = FileEdit(label="Start from", mode="r", filter="*.safetensors",
                             nullable=True)
        self.out = FileEdit(label="Run folder (empty: new)", mode="d", nullable=True)
        self.epochs = SpinBox(label="Epochs", min=1, max=100000, value=5)
        self.device = ComboBox(label="Device", choices=device_choices(), value="auto")
        self.config = TextEdit(label="Options (YAML)", value="")
        self.config.native.setPlaceholderText("e.g.\nbatch_size: 8\nlr: 0.0001")
        self.command = TextEdit(label="Command", value="")
        self.command.read_only = True
        self.copy_button = PushButton(text="Copy command")
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Epochs", min=0, max=1, value=0)
        self.status = Label(value="Choose an exported dataset folder.")
        self.checkpoint = Label(value="")
        self.compared = Label(value="")
        self.use_button = PushButton(text="Use the new model anyway", visible=False)
        self.log = TextEdit(label="Log", value="")
        self.log.read_only = True
        self.log.native.document().setMaximumBlockCount(LOG_LINES)
        for box in (self.config, self.command, self.log):  # they scroll: keep the panel short
            box.native.setMaximumHeight(TEXT_BOX_HEIGHT)
        self.extend([self.task, self.data, self.init, self.out, self.epochs, self.device,
                     self.config, self.command, self.copy_button, self.train_button,
                     self.cancel_button, self.progress, self.status, self.checkpoint,
                     self.compared, self.use_button, self.log])
        self.curves = TrainingCurves()
        self.native.layout().addWidget(self.curves)
        for widget in (self.task, self.init, self.out, self.epochs, self.device):
            widget.changed.connect(self.update_command)
        self.config.native.textChanged.connect(self.update_command)  # TextEdit has no `changed`
        self.data.changed.connect(self._on_data)
        self.copy_button.changed.connect(self.copy_command)
        self.train_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.use_button.changed.connect(self._on_use_button)
        self._disconnect = connect_events(
            self.native, [(viewer.layers.events.inserted, self._on_layers),
                          (viewer.layers.selection.events.changed, self._on_layers)],
            on_teardown=self._teardown)
        self._on_layers()
        self.update_command()
        fit_panel(self)

    # -- the command ---------------------------------------------------------------------
    def build_job(self) -> TrainJob:
        """The job the current fields describe (ValueError when something is missing)."""
        if self.data.value is None:
            raise ValueError("choose the dataset folder (an export) to train on")
        extra = {"launcher": tuple(self.launcher)} if self.launcher else {}
        return TrainJob(self.task.value, self.data.value, init=self.init.value,
                        out=self.out.value, epochs=self.epochs.value, device=self.device.value,
                        extra_config=self.config.value, **extra)

    def update_command(self, *_: Any) -> None:
        """Show the command line the fields describe (or what is missing)."""
        try:
            self.command.value = self.build_job().shell_command()
        except ValueError as err:
            self.command.value = f"# {err}"

    def copy_command(self, *_: Any) -> None:
        """Put the shown command on the clipboard."""
        from qtpy.QtWidgets import QApplication

        QApplication.clipboard().setText(self.command.value)
        self.status.value = "Command copied (its --config file is written when you press Train)"

    def set_current_model(self, checkpoint: str | Path | None) -> None:
        """Start the next run from ``checkpoint`` (e.g. the model the analysis widgets use)."""
        self.init.value = Path(checkpoint) if checkpoint else None

    def _on_layers(self, *_: Any) -> None:
        """Fill "Start from" with the checkpoint that made the selected (else newest) result
        layer, unless the user chose the field's value."""
        if self.init.value is not None and self.init.value != self._auto_init:
            return
        layers = [*self._viewer.layers.selection, *reversed(list(self._viewer.layers))]
        found = layer_checkpoint(layers)
        if found is not None and found != self.init.value:
            self.init.value = self._auto_init = found

    def _on_data(self, value: Any = None) -> None:
        self.update_command()
        if value is not None:
            start_worker(dataset_task, value, on_done=self._set_task)

    def _set_task(self, task: str | None) -> None:
        if task in TASKS and task != self.task.value:
            self.task.value = task
            self.status.value = f"Dataset of task {task!r}"

    # -- running -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a training run is being followed."""
        return self.worker is not None

    def start(self, *_: Any) -> None:
        """Launch the run described by the fields (in a worker; errors as notifications)."""
        if self.running:
            return
        try:
            job = self.build_job()
        except ValueError as err:
            self._fail(err)
            return
        self.job = job
        self.log.value = ""
        self._log(f"$ {job.shell_command()} --progress jsonl")
        self.checkpoint.value = self.compared.value = ""
        self.comparison, self.offered = None, None
        self.use_button.visible = False
        self.curves.reset()
        self.progress.max, self.progress.value = int(job.epochs or 1), 0
        self._pbar = napari_progress(total=int(job.epochs or 1),
                                     desc=f"Training {job.task}")
        self.status.value = f"Training {job.task} in {job.out} ..."
        self.train_button.enabled, self.cancel_button.enabled = False, True
        self.worker = start_worker(stream_events, job, on_yield=self._on_event,
                                   on_error=self._fail, on_finish=self._on_finish)

    def cancel(self, *_: Any) -> None:
        """Stop the run (SIGTERM, then SIGKILL after a grace period; never blocks here)."""
        if self.job is not None and self.running:
            self.job.cancel(block=False)
            self.status.value = "Cancelling ..."

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        kind = event.get("event")
        if kind == "step":
            steps = event.get("steps")
            self.status.value = (f"Epoch {event['epoch'] + 1}/{event['epochs']}, step "
                                 f"{event['step'] + 1}{f'/{steps}' if steps else ''}, "
                                 f"loss {event.get('loss', float('nan')):.4f}")
            return
        if kind in ("epoch_end", "resume"):
            self._set_epochs(event["epoch"] + 1, event.get("epochs"))
        self.curves.add_event(event)
        if kind != "step":
            self._log(event_line(event))
        if kind == "finished":
            self._finished(event)
        elif kind == "failed":
            self._fail(RuntimeError(event.get("error") or "training failed"))
        elif kind == "cancelled":
            self.status.value = f"Cancelled; partial run in {self.job.out if self.job else ''}"

    def _set_epochs(self, done: int, total: int | None) -> None:
        if total:
            self.progress.max = int(total)
        self.progress.value = min(done, self.progress.max)
        if self._pbar is not None:
            if total:
                self._pbar.total = int(total)
            self._pbar.n = done
            self._pbar.refresh()

    def _finished(self, event: dict[str, Any]) -> None:
        best = event.get("best")
        if not best:
            self.status.value = "Finished, but no checkpoint was written"
            return
        path = Path(best)
        self.checkpoint.value = f"New checkpoint: {path}"
        self._set_epochs(self.progress.max, None)
        self.comparison = compare_with_start(path)
        self.compared.value = self.comparison.text()
        if self.comparison.at_least_as_good:
            self.status.value = "Finished: at least as good as the starting model"
            self.use_new_model(path)
            return
        self.offered = path
        self.use_button.visible = True
        self.status.value = ("Finished; not handed to the analysis widgets: " + (
            "no starting model to compare it with" if self.comparison.start is None
            else "worse than the model it started from"))

    def _on_use_button(self, *_: Any) -> None:
        self.use_new_model()
        self.status.value = "Using the new model (chosen)"

    def use_new_model(self, path: str | Path | None = None) -> None:
        """Hand ``path`` (default: the offered checkpoint) over: the next run starts from it,
        the docked analysis widgets and every ``on_checkpoint`` callable get it."""
        path = Path(path) if path is not None else self.offered
        if path is None:
            return
        self.offered = None
        self.use_button.visible = False
        self.init.value = path  # the next round starts from it
        for callback in [*self.on_checkpoint, self._hand_to_docked_widgets]:
            try:
                callback(path)
            except Exception as err:  # one listener must not stop the others
                report_error(err, "Train: loading the new checkpoint")

    def _hand_to_docked_widgets(self, path: Path) -> None:
        """Give the new checkpoint to every docked widget whose model picker takes its task."""
        window = getattr(self._viewer, "window", None)
        docked = getattr(window, "dock_widgets", {}) if window is not None else {}
        taken = [name for name, widget in dict(docked).items()
                 if isinstance(getattr(widget, "picker", None), ModelPicker)
                 and widget.picker.use_checkpoint(path)]
        if taken:
            self.checkpoint.value += f" (now used by: {', '.join(taken)})"

    def _on_finish(self) -> None:
        self.worker = None
        if self._closed:
            return
        self.train_button.enabled, self.cancel_button.enabled = True, False
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _fail(self, err: BaseException) -> None:
        report_error(err, "Train")
        if not self._closed:
            self.status.value = f"Failed: {err}"

    def _log(self, line: str) -> None:
        self.log.native.append(line)

    def _teardown(self) -> None:
        """Cancel a running job and disconnect from the viewer's events (once)."""
        if self._closed:
            return
        self.cancel()
        self._closed = True
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._disconnect()
        stop_workers([self.worker])

    def close(self) -> None:
        """Cancel a running job and disconnect from the viewer's events."""
        self._teardown()
        super().close()
