"""monitor: watches budgets and liveness; declares a campaign out of wall-clock time, jobs stalled, and dead ends."""
