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
