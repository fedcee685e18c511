"""Operating the bridge: health and metrics (and their HTTP routes), logging, `bridge check`
and the admin commands."""
