"""``python -m stgraph``: the ``stgraph`` command (:func:`stgraph.cli.main`)."""

import sys

from stgraph.cli import main

if __name__ == "__main__":
    sys.exit(main())
