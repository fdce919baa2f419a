"""Sandbox backends besides the local one, and the confinement helper of the local backend."""
