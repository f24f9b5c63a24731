"""``python -m zeep_sfrefresh``: the same command line as the ``zeep-sfrefresh`` script."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
