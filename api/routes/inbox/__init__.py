"""The in-app inbox page: a person's notifications."""
