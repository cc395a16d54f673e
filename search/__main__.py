"""`python -m search SPEC [KEY=VALUE ...] [--name NAME] [--resume] ...` (same as `neuron search`)."""

from __future__ import annotations

import sys

from search.cli import main

if __name__ == "__main__":
    sys.exit(main())
