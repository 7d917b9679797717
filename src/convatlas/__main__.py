"""``python -m convatlas ...`` == the ``convatlas`` command."""

import sys

from convatlas.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
