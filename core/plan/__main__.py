"""`python -m core.plan CONFIG [...]`: the memory planner's command line (core.plan.memory)."""

import sys

from core.plan.memory import main

sys.exit(main())
