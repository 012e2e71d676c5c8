"""Use cases, one a module: what timebok does with a request, a message or a tick."""
