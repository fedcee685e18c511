"""Everything that talks to Slack: the bolt frontend (commands, events), the Web API client,
the setup probe, Slack's text format, and what the bot says. Only this package imports
slack_bolt and slack_sdk."""
