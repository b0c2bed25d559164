"""``python -m napari_bloodseg.cli …`` (same as ``bloodseg …``)."""

import sys

from . import main

sys.exit(main())
