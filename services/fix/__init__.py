"""fix: repairs failing environments, remembering across campaigns which repair cured which failure."""
