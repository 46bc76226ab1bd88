"""``python -m rxbeanstalk``: the command-line tool (``python -m rxbeanstalk --help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
