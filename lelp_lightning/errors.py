"""The one exception type for bad user input: the CLI prints its message as one sentence and exits 2."""


class LelpError(ValueError):
    """Bad input (config, data file, cache): the message names what was wrong and what was expected."""
