"""`bridge demo`: the bridge between a local Slack stand-in and two simulated phones.

`cli` (the subcommand), `runner` (starts and stops everything), `slack_standin` (the Web API
and workspace the page shows), `slack_web_api` (how it reads calls and stamps messages, shared
with the tests' fake Slack), `phone` (a small SIP user agent, also the tests' phone),
`page.html` (the page).
"""
