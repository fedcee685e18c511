"""Moving texts: the inbound relay (phone -> Slack), the outbox (Slack -> phone), the gate
every outgoing text passes, and the feedback that tells senders what became of their text."""
