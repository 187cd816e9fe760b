"""``python -m graphattn`` runs the ``graphattn`` command."""
import sys

from graphattn.cli import main

if __name__ == "__main__":
    sys.exit(main())
