"""Sample bank: real and procedural single-cell samples (RGBA, alpha = mask) at one scale.

See :mod:`.store` for the on-disk format, :mod:`.importers` for the sources, :mod:`.masks` for mask
extraction and :mod:`.scale` for measuring a source's red-cell size.
"""

from .gallery import gallery_grid, read_bank_gallery, save_gallery_png
from .importers import (
    FORMAT_NAMES,
    LICENCES,
    ImportFormat,
    ImportReport,
    LayoutError,
    import_procedural,
    parse_format,
    run_import,
    synthesize_clumps,
)
from .masks import Extraction, RejectReason, extract_platelet, extract_rbc, extract_wbc
from .scale import TARGET_RBC_DIAMETER, ScaleError, ScaleEstimate, measure_rbc_diameter, rescale_rgba
from .store import (
    BANK_FORMAT,
    MANIFEST_COLUMNS,
    SPLITS,
    Bank,
    Sample,
    assign_split,
    format_stats,
    is_bank,
    make_sample_id,
)

__all__ = [
    "BANK_FORMAT",
    "FORMAT_NAMES",
    "LICENCES",
    "MANIFEST_COLUMNS",
    "SPLITS",
    "TARGET_RBC_DIAMETER",
    "Bank",
    "Extraction",
    "ImportFormat",
    "ImportReport",
    "LayoutError",
    "RejectReason",
    "Sample",
    "ScaleError",
    "ScaleEstimate",
    "assign_split",
    "extract_platelet",
    "extract_rbc",
    "extract_wbc",
    "format_stats",
    "gallery_grid",
    "import_procedural",
    "is_bank",
    "make_sample_id",
    "measure_rbc_diameter",
    "parse_format",
    "read_bank_gallery",
    "rescale_rgba",
    "run_import",
    "save_gallery_png",
    "synthesize_clumps",
]
