"""Contributions to savings groups and the weekly summaries sent to members (SPEC §4, §5)."""
