"""`bridge demo`: the bridge between a local Slack stand-in and two simulated phones.

`cli` (the subcommand), `runner` (starts and stops everything), `slack_standin` (the Web API
and workspace the page shows), `slack_views` (its modals, App Home and interactivity payloads),
`slack_web_api` (how it reads calls and stamps messages, shared with the tests' fake Slack),
`phone` (a small SIP user agent, also the tests' phone), `page.html` with `page.css`,
`page.js` and `blockkit.js` (the page and its small Block Kit renderer).
"""
