"""Errors a user can act on: the CLI prints them as one line with the way out, no traceback."""


class PeftyError(Exception):
    """Base class: the message names the input (file, line, key) and what to do about it."""


class ConfigError(PeftyError):
    """A config file, key, value or command-line option is wrong."""


class DataError(PeftyError):
    """An audio file, transcript, manifest or corpus layout is wrong."""


class ModelError(PeftyError):
    """A model, adapter or export directory is missing, of the wrong kind, or inconsistent."""
