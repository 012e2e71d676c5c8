"""Pure mapping between timebok's message dataclasses and KITH XML (no I/O, no worker imports)."""
