"""Small helpers shared by the widgets."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import FileEdit


def path_edit(label: str, mode: str, tooltip: str, filter: str | None = None) -> FileEdit:
    """A file/folder picker that starts empty (never silently the working directory)."""
    return FileEdit(label=label, mode=mode, filter=filter, nullable=True, value=None, tooltip=tooltip)


def chosen_path(edit: FileEdit) -> Path | None:
    """The path the user typed or picked, or None when the field is empty."""
    if edit.value is None:
        return None
    text = str(edit.line_edit.value).strip()
    return None if text in ("", ".") else Path(text).expanduser()


def show_progress(bar, done: int, total: int) -> None:
    """Move a ``napari.utils.progress`` bar to ``done`` of ``total`` (the total may change)."""
    if bar is None:
        return
    if bar.total != total:
        bar.total = total
    bar.n = done
    bar.refresh()


class WorkerDock:
    """The life cycle of one background job in a dock: Run/Stop buttons, a napari progress bar,
    a status line, and failures shown as a notification (never a traceback).

    A dock mixing this in sets ``_run``, ``_stop_button`` and ``_status`` widgets and ``_task``
    (e.g. "Segmentation") and calls :meth:`_launch`; ``worker`` is None when idle."""

    _task = "The job"
    worker = None
    _pbar = None

    def _launch(self, worker, pbar, status: str, on_yield, on_return) -> None:
        worker.yielded.connect(on_yield)
        worker.returned.connect(on_return)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        worker.warned.connect(self._on_warning)  # napari does not relay thread-worker warnings itself
        self.worker, self._pbar = worker, pbar
        self._run.enabled, self._stop_button.enabled = False, True
        self._status.value = status
        worker.start()

    def _on_warning(self, warning) -> None:
        from napari.utils.notifications import show_warning

        show_warning(str(warning[0]) if isinstance(warning, tuple) else str(warning))

    def _on_error(self, exc: Exception) -> None:
        self._status.value = f"error: {exc}"
        from napari.utils.notifications import show_error

        show_error(f"{self._task} failed: {exc}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._run.enabled, self._stop_button.enabled = True, False
        self.worker = None
