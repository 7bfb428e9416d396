"""evaluation room (see README layout)."""
