"""runner: pulls experiments from its pool and runs them in fresh sandboxed workspaces."""
