"""The one exception type for bad user input: the CLI prints its message as one sentence and exits 2."""


class LelpError(ValueError):
    """Bad input (config, data file, cache): the message names what was wrong and what was expected."""


def lelp_error_behind(err: BaseException | None) -> LelpError | None:
    """The LelpError behind ``err`` (jsonargparse wraps one raised in a constructor while it instantiates); Lightning's
    MisconfigurationException (two trainer options that contradict each other) is bad input too."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LelpError):
            return err
        if type(err).__name__ == "MisconfigurationException":  # Lightning's word for options that contradict
            return LelpError(f"{str(err).splitlines()[0].rstrip('.')}; change one of the two options.")
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
