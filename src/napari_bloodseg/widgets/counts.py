"""Counts dock: cells of a class map, the blood report (differential, parasitemia), a table whose
rows centre the view on their cell, and a Points layer naming each cell."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton
from napari.layers import Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ..cells import find_cells, save_report, summarize
from ..classes import CLASS_COLORS, BloodClass
from ..slide_report import (
    format_run_summary,
    free_summary_paths,
    is_class_map,
    summarize_class_maps,
    write_run_summary,
)
from .utils import StatusLine, chosen_path, compact, path_edit

if TYPE_CHECKING:
    import napari

COLUMNS = ("id", "class", "row", "col", "area px", "probability")


def format_summary(s: dict) -> str:
    lines = [f"cells: {s['counts_total']}"]
    whole = f" ({s['rbc_whole']} not cut by the edge)" if s.get("rbc_whole") is not None else ""
    lines.append(f"RBC: {s['rbc_total']}{whole}  infected: {s['infected_rbc']}  parasitemia: "
                 + ("–" if s["parasitemia_percent"] is None else f"{s['parasitemia_percent']:.2f} %"))
    diff = ", ".join(f"{k} {v:.0f} %" for k, v in s["wbc_differential_percent"].items() if v)
    lines.append(f"WBC: {s['wbc_total']}" + (f"  ({diff})" if diff else ""))
    lines.append(f"platelets: {s['platelets']}  clumps: {s['platelet_clumps']}")
    return "\n".join(lines)


@thread_worker(ignore_errors=True)
def _count_worker(labels: np.ndarray, diameter: float, confidence):
    _, records = find_cells(labels, diameter, confidence)
    return records


@thread_worker(ignore_errors=True)
def _summarize_worker(maps: list):
    return summarize_class_maps(maps)


class CountsWidget(Container):
    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        self._viewer = napari_viewer
        self._labels = ComboBox(label="class map", choices=self._label_layers, tooltip="Labels layer with class ids")
        self._diameter = FloatSpinBox(
            label="RBC diameter", value=36.0, min=4.0, max=1000.0, step=0.5,
            tooltip="Healthy red cell diameter in image pixels (about 7.5 µm); sets how touching cells are split. "
            "Filled in from the Segment result when known.",
        )
        self._diameter.native.setSuffix(" px")
        self._run = PushButton(text="Count cells")
        self._summary = StatusLine()
        self._save_to = path_edit(
            "save counts to", "w", "CSV file for the per-cell table (class, position, area, probability). The "
            "summary (counts, parasitemia %, WBC differential %) goes beside it as <name>_summary.json. "
            "Existing files are never replaced.", filter="*.csv")
        self._save = PushButton(text="Save counts", enabled=False,
                                tooltip="Write the table and summary of the last count")
        self._summarize = PushButton(
            text="Summarize all class maps",
            tooltip="Count every class map open in the viewer (the fields of one slide) and report them together: "
            "counts, WBC differential and the WBCs it rests on, parasitemia with its 95 % confidence interval, and a "
            "flag under 100 WBCs or 1,000 RBCs. Written as summary.json + summary.csv (one row per map and a total) "
            "beside 'save counts to' when it is set, under a free name: nothing is replaced.")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setMinimumHeight(200)
        self.table.setSortingEnabled(True)  # click a header: e.g. by class, to review the WBCs together
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # by id until the user picks another order
        self.table.setToolTip("One row per cell; click a row to centre the view on it, a header to sort")
        self.extend([self._labels, self._diameter, self._run, self._summary, self._save_to, self._save, self._summarize])
        self.native.layout().addWidget(self.table)
        compact(self)
        self._run.changed.connect(self.run)
        self._save.changed.connect(self.save)
        self._summarize.changed.connect(self.summarize_all)
        self._labels.changed.connect(self._fill_diameter)
        self.table.cellClicked.connect(self._centre_on_row)
        for ev in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            ev.connect(self._labels.reset_choices)
        self.records: list = []
        self.summary: dict | None = None
        self.run_summary: dict | None = None  # the last "Summarize all class maps"
        self.run_paths: tuple[Path, Path] | None = None  # where it was written
        self.worker = None
        self._fill_diameter(self._labels.value)

    def _label_layers(self, _w=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _fill_diameter(self, layer) -> None:
        d = getattr(layer, "metadata", {}).get("bloodseg", {}).get("rbc_diameter") if layer is not None else None
        if d:
            self._diameter.value = float(d)

    def run(self) -> None:
        layer = self._labels.value
        if layer is None:
            show_error("No class map: segment an image or open a mask first.")
            return
        data = np.asarray(layer.data)
        if data.ndim != 2:
            show_error(f"Counting needs a 2-D class map; '{layer.name}' has shape {data.shape}.")
            return
        conf = layer.metadata.get("confidence")
        worker = _count_worker(data, float(self._diameter.value), conf if conf is not None and conf.shape == data.shape else None)
        worker.returned.connect(lambda recs: self._show(layer, recs))
        worker.errored.connect(lambda e: show_error(f"Counting failed: {e}"))
        worker.finished.connect(self._done)
        self.worker = worker
        self._run.enabled = False
        self._summary.value = "counting…"
        worker.start()

    def _done(self) -> None:
        self.worker = None
        self._run.enabled = self._summarize.enabled = True

    def summarize_all(self) -> None:
        """Count every 2-D class map in the viewer in the background, then show and write the
        run-level summary (see :mod:`napari_bloodseg.slide_report`)."""
        maps = []
        for layer in self._label_layers():
            data = np.asarray(layer.data)
            if not is_class_map(data):
                continue
            meta = layer.metadata or {}
            d = meta.get("bloodseg", {}).get("rbc_diameter") or float(self._diameter.value)
            conf = meta.get("confidence")
            maps.append((layer.name, data, float(d), conf if conf is not None and conf.shape == data.shape else None))
        if not maps:
            show_error("No class maps to summarize: segment images or open masks first (2-D maps of class ids 0-9).")
            return
        worker = _summarize_worker(maps)
        worker.returned.connect(self._show_run)
        worker.errored.connect(lambda e: show_error(f"Summarizing failed: {e}"))
        worker.finished.connect(self._done)
        self.worker = worker
        self._run.enabled = self._summarize.enabled = False
        self._summary.value = f"counting {len(maps)} class maps…"
        worker.start()

    def _show_run(self, summary: dict) -> None:
        self.run_summary, self.run_paths = summary, None
        self._summary.value = format_run_summary(summary)
        path = chosen_path(self._save_to)
        if path is None:
            show_info("Run summary shown; choose 'save counts to' to also write summary.json and summary.csv.")
            return
        json_path, csv_path = free_summary_paths(path.parent)
        try:
            write_run_summary(summary, json_path, csv_path, overwrite=False)
        except OSError as e:  # FileExistsError included: another program took the name meanwhile
            show_error(f"Could not save the run summary (nothing was replaced): {e}")
            return
        self.run_paths = json_path, csv_path
        show_info(f"Run summary of {summary['total']['images']} class maps saved to {json_path} and {csv_path.name}")

    def _show(self, layer: Labels, records: list) -> None:
        self.records = records
        self.summary = summarize(records, float(self._diameter.value))
        self.summary["class_map"] = layer.name
        self._save.enabled = True
        self._summary.value = format_summary(self.summary)
        self.table.setSortingEnabled(False)  # rows stay where they are put while filling
        self.table.setRowCount(len(records))
        for i, r in enumerate(records):
            vals = (int(r.id), r.class_name, round(float(r.centroid_row)), round(float(r.centroid_col)), int(r.area_px),
                    None if np.isnan(r.mean_probability) else round(float(r.mean_probability), 2))
            for j, v in enumerate(vals):
                item = QTableWidgetItem()
                item.setData(Qt.ItemDataRole.DisplayRole, "" if v is None else v)  # numbers sort as numbers
                if j == 0:
                    item.setData(Qt.ItemDataRole.UserRole, i)  # the record behind the row, whatever the order
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        name = f"{layer.name} cells"
        coords = np.array([[r.centroid_row, r.centroid_col] for r in records]).reshape(-1, 2)
        ids = np.array([r.class_id for r in records], dtype=int)
        # healthy RBCs are most of a field: their names would bury the cells a reader checks
        shown = np.array(["" if c == BloodClass.HEALTHY_RBC else r.class_name for c, r in zip(ids, records)], dtype=object)
        features = {"id": np.array([r.id for r in records]), "class": np.array([r.class_name for r in records], dtype=object),
                    "name": shown}
        if name in self._viewer.layers:
            self._viewer.layers.remove(name)  # our own point markers, regenerated from the map
        self._viewer.add_points(
            coords, name=name, features=features, size=6, face_color=CLASS_COLORS[ids] / 255.0 if len(ids) else "white",
            border_color="black", text={"string": "{name}", "size": 8, "color": "black", "translation": [-10, 0]},
            scale=layer.scale[-2:], translate=layer.translate[-2:],
        )
        self._viewer.layers.selection.active = layer

    def save(self) -> tuple[Path, Path] | None:
        """Write the last count: <name>.csv (one row per cell) and <name>_summary.json."""
        if self.summary is None:
            show_error("Count cells first.")
            return None
        path = chosen_path(self._save_to)
        if path is None:
            show_error("Choose a CSV file to save the counts to.")
            return None
        path = path if path.suffix.lower() == ".csv" else path.with_name(path.name + ".csv")
        summary_path = path.with_name(f"{path.stem}_summary.json")
        taken = [p.name for p in (path, summary_path) if p.exists()]
        if taken:
            show_error(f"{' and '.join(taken)} already exist in {path.parent}: choose another name (nothing was replaced).")
            return None
        try:
            save_report(self.records, self.summary, path, summary_path)
        except OSError as e:
            show_error(f"Could not save the counts: {e}")
            return None
        show_info(f"Saved {len(self.records)} cells to {path} and the summary to {summary_path.name}")
        return path, summary_path

    def _centre_on_row(self, row: int, _col: int = 0) -> None:
        item = self.table.item(row, 0)
        index = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if index is None or not 0 <= index < len(self.records):
            return
        r = self.records[index]
        layer = self._labels.value
        scale = np.asarray(layer.scale[-2:]) if layer is not None else np.ones(2)
        shift = np.asarray(layer.translate[-2:]) if layer is not None else np.zeros(2)
        world = np.array([r.centroid_row, r.centroid_col]) * scale + shift
        self._viewer.camera.center = tuple(world)
        self._viewer.camera.zoom = max(self._viewer.camera.zoom, 2.0)
