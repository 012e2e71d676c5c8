"""Entry points: the Celery app and tasks, the command line, the demo."""
