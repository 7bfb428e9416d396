"""training room (see README layout)."""
