"""Audit trail: who did what, kept live for the retention period, then archived (SPEC §4, §5)."""
