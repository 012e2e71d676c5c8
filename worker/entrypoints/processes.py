"""Long-running processes: the Celery worker as `timebok worker` and the benchmark start it.

Below the command line, so the benchmark can start a worker without importing the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys

from worker.settings import Settings


def start_worker(settings: Settings) -> None:
    """Before the pool forks: /metrics when TIMEBOK_METRICS_PORT is set, and error tracking."""
    from worker import metrics
    from worker.flows import status
    from worker.observability import init_sentry

    if settings.metrics_port or os.environ.get(metrics.MULTIPROC_ENV):
        metrics.use_multiprocess_dir()
    if settings.metrics_port:
        collector = metrics.StatusCollector(status.source(settings), settings.own_her_id)
        metrics.serve(settings.metrics_port, collector)
    init_sentry(settings)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Start a worker after checking the database is migrated."""
    from worker.bootstrap import bootstrap
    from worker.constants import MAINTENANCE_QUEUE, REQUESTS_QUEUE
    from worker.entrypoints.app import create_app
    from worker.errors import NotMigrated

    start_worker(settings)  # before any metric exists and before the pool forks
    try:
        bootstrap(settings).store.check_migrated()
    except NotMigrated as exc:
        print(f"timebok: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    argv = [
        "worker",
        f"--queues={REQUESTS_QUEUE},{MAINTENANCE_QUEUE}",
        f"--concurrency={args.concurrency}",
        f"--loglevel={args.loglevel}",
        f"--pool={args.pool}",
        f"--hostname={args.hostname or 'timebok@%h'}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0
