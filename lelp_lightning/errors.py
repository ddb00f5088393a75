"""The one exception type for bad user input: the CLI prints its message as one sentence and exits 2."""


class LelpError(ValueError):
    """Bad input (config, data file, cache): the message names what was wrong and what was expected."""


def lelp_error_behind(err: BaseException | None) -> LelpError | None:
    """The LelpError behind ``err``: jsonargparse wraps one raised in a constructor while it instantiates."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LelpError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
