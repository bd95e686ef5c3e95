"""`python -m ivrbot` is the `ivrbot` command."""

import sys

from ivrbot.cli import main

sys.exit(main())
