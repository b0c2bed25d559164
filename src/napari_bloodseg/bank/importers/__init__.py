"""Importers: one per source format, each turning a folder of cells into bank samples.

Every importer plans *tasks* (one per source image) in the main process, runs them (optionally in
worker processes: read, extract or check the mask, crop, rescale to the bank scale) and adds the
results to the bank. :func:`run_import` is the single entry point; it returns an
:class:`ImportReport` (added per class, already present, rejected per reason, unreadable files,
the measured RBC diameter of each source, time).

Formats (:class:`ImportFormat`) and the layouts they expect:

``pbc``
    ``SRC/<class>/*.jpg`` (PBC, Acevedo et al. 2020): basophil, eosinophil, lymphocyte, monocyte,
    neutrophil, platelet (→ thrombocyte); other PBC folders (ig, erythroblast) are skipped.
    No masks: the centred cell is extracted.
``zheng``
    ``SRC/Dataset N/NNN.bmp`` + ``NNN.png`` masks (0 / 128 cytoplasm / 255 nucleus) and
    ``SRC/Class Labels of Dataset N.csv`` (1 neutrophil, 2 lymphocyte, 3 monocyte, 4 eosinophil,
    5 basophil); SRC may also be one ``Dataset N`` folder (CSV in its parent). Sources
    ``zheng-ds1`` / ``zheng-ds2``. Dataset 1's faint red cells cannot be measured, so its RBC
    diameter is calibrated from the neutrophil size: DS1 neutrophil diameter × (DS2 RBC diameter /
    DS2 neutrophil diameter), all from expert masks and measured DS2 red cells.
``bccd-wbc``
    ``SRC/Input/BCCD/BloodImage_NNNNN.jpg``, ``SRC/Input/BCCD/labels.csv`` (``,Image,Category``)
    and ``SRC/Ground Truth/BCCD/BloodImage_Mask_NNNNN.png`` (RGB, ~0 / 160 / 255). Every connected
    WBC of the mask is a sample of the listed type; several different types listed → ambiguous,
    skipped; no type listed → skipped.
``malaria-crops``
    ``SRC/{falciparum,healthy}/<slide>/<patch>/*.jpg`` (near-white surround) or the NIH layout
    ``SRC/[cell_images/]{Parasitized,Uninfected}/*.png`` (black surround) → infected / healthy RBC.
    The cell is thresholded from its surround; the scale comes from the healthy cells themselves.
``rbc-points``
    ``SRC/Dataset/*.jpg`` + ``SRC/Label/<stem>.txt`` lines ``x y type`` (Chula RBC-12): type 0
    (normal) → healthy RBC; other types are not used. The field is segmented once; each point
    takes the cell containing it, rejected when it touches the frame, holds another point or is
    not convex (overlaps).
``voc``
    ``SRC/JPEGImages/*.jpg`` + ``SRC/Annotations/*.xml`` Pascal VOC boxes (BCCD): ``RBC`` →
    healthy RBC (the segmented cell at the box centre, rejected unless its box matches the
    annotated one, IoU ≥ 0.5), ``Platelets`` → thrombocyte (purple object in the box). ``WBC``
    boxes are not used: BCCD WBCs are better taken from ``bccd-wbc``, whose masks are expert drawn.
``lisc``
    The LISC distribution (Rezatofighi & Soltanian-Zadeh 2011): ``SRC/Main Dataset/<cls>/<n>.bmp``
    and ``SRC/Ground Truth Segmentation/<cls>/areaforexpert1/<n>_expert.bmp`` (grey masks: 0
    background, brighter levels cytoplasm and nucleus), ``<cls>`` in Baso, eosi, lymp, mono, neut
    (case-insensitive; ``mixt`` holds mixed cells and is skipped). The centred component is taken.
``yolo``
    ``SRC/[<split>/]images/*`` + ``labels/<stem>.txt`` lines ``class cx cy w h`` (0-1), class names
    of the ids from ``--box-classes``, ``SRC/data.yaml`` (``names``) or ``SRC/classes.txt``
    (wbc_rpi, Roboflow exports). See ``boxes`` for what each box gives.
``boxes-csv``
    One ``SRC/*.csv`` with columns ``image, xmin, ymin, xmax, ymax, label`` (pixels, or 0-1
    fractions when every coordinate is ≤ 1) and the images in ``SRC/images/`` or ``SRC/``
    (bcd_draaslan). Both box formats: the RBC diameter from the RBC boxes (20 or more), else
    measured; split per image or per slide (``--group-by slide``); ``--hold-out`` pins named
    images or slides to the test split.
``folder``
    ``SRC/<class name>/*.{png,jpg,jpeg,tif,tiff,bmp}`` (class names as in the class table, e.g.
    ``healthy_rbc``, ``platelet clump``). A mask may sit beside an image as ``<stem>_mask.png``
    (non-zero = cell), or the image may carry an alpha channel; otherwise the centred cell is
    extracted. Scale from ``--rbc-diameter`` or measured (healthy RBC folder, else backgrounds).
``procedural``
    The project's renderer (:func:`napari_bloodseg.render.render_cell`) as a source; see
    :func:`import_procedural` (all nine classes, its own clumps included; SRC is ignored).

Platelet clumps of real data: no labelled source exists, :func:`synthesize_clumps` builds them
from single thrombocytes already in the bank (``bloodseg bank clumps``).

Licences: pbc CC BY 4.0, zheng GPL-3.0, bccd-wbc / malaria-crops / rbc-points (Chula) / voc
(BCCD) MIT, procedural BSD-3-Clause (the project's own), folder / yolo / boxes-csv as given
(default 'unknown').

Modules: ``base`` (formats, licences, the report, tasks and shared helpers), ``tasks`` (running
one task in a worker), ``crops`` (pbc, malaria-crops, folder), ``masked`` (zheng, bccd-wbc, lisc),
``annotated`` (rbc-points, voc), ``boxes`` (yolo, boxes-csv), ``run`` (:func:`run_import`), ``procedural`` (the renderer as a
source, platelet clumps).
"""

from .base import (
    FORMAT_NAMES,
    LICENCES,
    ImportFormat,
    ImportReport,
    LayoutError,
    SourceInfo,
    parse_format,
)
from .procedural import import_procedural, synthesize_clumps
from .run import run_import

__all__ = [
    "FORMAT_NAMES",
    "LICENCES",
    "ImportFormat",
    "ImportReport",
    "LayoutError",
    "SourceInfo",
    "import_procedural",
    "parse_format",
    "run_import",
    "synthesize_clumps",
]
