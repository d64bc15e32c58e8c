"""Live changes: the YAML watched and reloaded, switches, the rollout, and edits that keep the
file as written."""
