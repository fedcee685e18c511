"""`bridge demo`: the bridge between a local Slack stand-in and two simulated phones.

`cli` (the subcommand), `runner` (starts and stops everything), `slack_standin` (the Web API
and workspace the page shows), `phone` (a small SIP user agent), `page.html` (the page).
"""
