"""Metrics read by every front end: lifecycle stamps, stats snapshots, the one report."""
