"""napari dock widgets (Qt, magicgui): one module per dock, plus ``utils`` (shared Qt helpers) and
``session`` (which Segment dock belongs to which viewer). Only napari.yaml and the tests import
these; the Qt-free core in the package above never imports from here."""
