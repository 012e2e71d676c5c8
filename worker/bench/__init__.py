"""The benchmark rig: `timebok bench` (run), its environment, scenarios and data."""
