"""dsbox."""
