"""scheduler: owns the campaign and its optimisation loop."""
