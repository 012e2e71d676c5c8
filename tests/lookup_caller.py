"""A separate process asking free-slot lookups, for the tests of the shared reply queue.

`python -m tests.lookup_caller GO_FILE CLINIC:DAY ...` (settings from the environment):
starts its reply consumer with one lookup, prints `ready`, waits until GO_FILE exists so
that every caller's lookups are in flight at once, asks them all concurrently and prints
one JSON object: `{"answers": [...], "routers": [stats, ...]}` (an answer is the lookup's
JSON, or `{"error": "..."}`).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from worker.adapters.transports import base
from worker.bootstrap import LightDeps
from worker.flows import lookups
from worker.settings import Settings


def main(argv: list[str]) -> int:
    """Warm up, wait for the go, ask, print."""
    go, asked = Path(argv[0]), [a.split(":") for a in argv[1:]]
    deps = LightDeps(Settings())
    clinic, day = asked[0]
    lookups.free_slots(deps, lookups.SlotsQuery(clinic, start=date.fromisoformat(day)))
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)

    def ask(item: list[str]) -> dict[str, Any]:
        first = date.fromisoformat(item[1])
        try:
            return lookups.free_slots(deps, lookups.SlotsQuery(item[0], start=first, end=first))
        except lookups.NoAnswer as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(ask, asked))
    routers = [r.stats for per_queue in base._routers.values() for r in per_queue.values()]
    print(json.dumps({"answers": answers, "routers": routers}), flush=True)
    lookups.finish(deps)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
