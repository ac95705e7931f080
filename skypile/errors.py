"""Errors shared by the config loader and the modules it calls (no imports of our own)."""


class ConfigError(ValueError):
    """A config file or override that does not fit the config's shape."""
