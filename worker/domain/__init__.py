"""Pure booking domain: states, transitions and the events they record (standard library only)."""
