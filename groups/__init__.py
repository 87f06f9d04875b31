"""Savings groups, their members and payout rounds (SPEC §4, §5)."""
