"""The pure core: values, the error tree, the directory, access policy, segmenting, routing
decisions. Nothing here does I/O or imports Slack, panoramisk, aiohttp or sqlite3, so every
part of it can be tested from plain values."""
