"""Stage chains per method."""
