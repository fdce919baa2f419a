"""objective: reads the task card and the paper text, and freezes the campaign's rubric."""
