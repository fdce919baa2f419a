"""ideator: the idea library of a campaign; answers each round of IdeasRequested through a brain."""
