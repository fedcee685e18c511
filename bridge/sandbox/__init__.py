"""A real Asterisk 22 for trying the bridge out: the sid chroot builder and its launcher.

`build.sh` (package data) builds the chroot once; `launcher.AsteriskSandbox` starts Asterisk
in it with the snippets from `bridge/asterisk/templates/`, as `bridge demo` does.
"""
