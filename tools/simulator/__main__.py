"""``python -m geoplex.tools.simulator`` only points to the command that runs it."""

import sys

sys.exit("run `geoplex presence simulate --help`")
