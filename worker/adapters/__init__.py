"""Adapters to the outside world (store, EPJ transport, address registry)."""
