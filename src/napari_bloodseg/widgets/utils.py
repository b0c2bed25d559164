"""Small helpers shared by the widgets."""

from __future__ import annotations

import re
from pathlib import Path

from magicgui.widgets import Container, FileEdit, Label
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QSizePolicy, QToolButton

_ZWSP = "\u200b"  # zero-width space: a place where a long path may wrap


def path_edit(label: str, mode: str, tooltip: str, filter: str | None = None) -> FileEdit:
    """A file/folder picker that starts empty (never silently the working directory).

    It asks for little width: a short "Browse…" button, and a text field that takes the width the
    dock has rather than widening it (a long path scrolls inside it)."""
    edit = FileEdit(label=label, mode=mode, filter=filter, nullable=True, value=None, tooltip=tooltip)
    edit.choose_btn.text = "Browse…"
    edit.choose_btn.tooltip = {"d": "Choose a folder", "w": "Choose where to save"}.get(mode, "Choose a file")
    edit.line_edit.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    edit.line_edit.native.setMinimumWidth(60)
    return edit


def chosen_path(edit: FileEdit) -> Path | None:
    """The path the user typed or picked, or None when the field is empty."""
    if edit.value is None:
        return None
    text = str(edit.line_edit.value).strip()
    return None if text in ("", ".") else Path(text).expanduser()


class _FitHeight(QObject):
    """Keeps a word-wrapped label as tall as its text needs at its current width."""

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Resize:
            _fit_height(obj)
        return False


def _fit_height(label) -> None:
    height = label.heightForWidth(max(label.width(), 40)) if label.text() else 0
    if height > 0 and height != label.minimumHeight():
        label.setMinimumHeight(height)


class StatusLine(Label):
    """A status line that wraps (also inside long paths) rather than widening its dock.

    ``value`` reads back exactly what was set; the whole text is also the tooltip."""

    def __init__(self, value: str = "", **kwargs):
        super().__init__(value="", **kwargs)
        self.native.setWordWrap(True)
        # the dock's width decides where the text wraps, never the other way round
        self.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.native.setMinimumWidth(40)
        self._fit = _FitHeight(self.native)
        self.native.installEventFilter(self._fit)
        self.set_value(value)

    def get_value(self) -> str:
        return super().get_value().replace(_ZWSP, "")

    def set_value(self, value) -> None:
        text = "" if value is None else str(value)
        super().set_value(re.sub(r"([/\\_])", "\\1" + _ZWSP, text))
        self.native.setToolTip(text)
        _fit_height(self.native)


def compact(container: Container, chars: int = 8) -> Container:
    """Keep a dock narrow: drop-down lists size to ``chars`` characters instead of their longest
    item (e.g. a layer named after a long file), number boxes to their value rather than the largest
    one allowed, and long status lines wrap (see :class:`StatusLine`).
    The full item texts still show in the opened list. Rows without a label (status lines, folding
    sections) span the whole width. Returns ``container``."""
    for widget in container:
        wrapper = widget._labeled_widget()
        if wrapper is not None and not widget.label:
            wrapper._label_widget.visible = False
    for combo in container.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)
    for spin in container.native.findChildren(QAbstractSpinBox):  # room for the value, not for the largest allowed
        spin.setMinimumWidth(min(spin.minimumSizeHint().width(), 100))
        spin.setSizePolicy(QSizePolicy.Policy.Ignored, spin.sizePolicy().verticalPolicy())
    return container


class Collapsible(Container):
    """Options most people never change, behind a header that folds them away (folded at first).

    ``widgets`` keep their labels and tooltips; ``expanded`` tells or sets whether they show."""

    def __init__(self, widgets, title: str = "Advanced", tooltip: str | None = None):
        self.body = Container()
        self.body.extend(list(widgets))  # added after construction so that their labels line up
        super().__init__(widgets=[self.body], labels=False)
        self.margins = (0, 0, 0, 0)
        self.body.margins = (12, 0, 0, 0)
        self.title = title
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setChecked(False)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setAutoRaise(True)
        if tooltip:
            self.toggle.setToolTip(tooltip)
        self.native.layout().insertWidget(0, self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        self.toggle.toggled.connect(self._set_expanded)
        self.body.visible = False

    @property
    def expanded(self) -> bool:
        return self.toggle.isChecked()

    @expanded.setter
    def expanded(self, value: bool) -> None:
        self.toggle.setChecked(bool(value))  # toggled → _set_expanded

    def _set_expanded(self, value: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if value else Qt.ArrowType.RightArrow)
        self.body.visible = value


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
