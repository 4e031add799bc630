"""Insight routes: Today's Focus, Account 360, Renewal Risk and the CFO console."""
