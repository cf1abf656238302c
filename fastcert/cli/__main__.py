"""``python -m fastcert.cli``."""
import sys

from fastcert.cli.entry import main

sys.exit(main())
