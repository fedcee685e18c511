"""Everything that talks to Asterisk: the AMI link (the only importer of panoramisk), the
decoding of the dialplan's events, and the snippets to paste into Asterisk's config."""
