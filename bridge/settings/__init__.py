"""Reading the TOML config and the environment into one frozen, validated `Settings`."""
