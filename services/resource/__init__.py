"""resource: snapshots a paper's folder into the artifact store, content-addressed."""
