"""napari-bloodseg: ten-class blood smear segmentation for napari and the command line."""

__version__ = "0.1.0"
