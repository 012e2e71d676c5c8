"""`python -m worker.sim`: the simulator without the rest of the CLI."""

from worker.sim.cli import main

raise SystemExit(main())
