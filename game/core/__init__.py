"""The workspace, its typed events and scene presets (numpy and the standard library only)."""
