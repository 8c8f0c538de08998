"""The dashboard's and the chat's widgets, one per module."""
