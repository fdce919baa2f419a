"""The kernel every service imports: contracts, subjects, bus, event store, brain, sandbox, CLI."""
