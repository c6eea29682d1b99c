"""`python -m probgen`: the `probgen` command (what `torchrun -m probgen fit ...` runs)."""

import sys

from probgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
