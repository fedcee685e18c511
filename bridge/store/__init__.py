"""The store: every text the bridge is responsible for, kept until it is delivered."""
