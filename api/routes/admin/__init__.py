"""Administration routes: people, personas and limits, segments and cadences, policy, sending
domain."""
