"""Slack <-> Asterisk text bridge."""
