"""The host path: signals, recipients, the planner, our part of the host's transaction."""
