"""The one error type mdkeras raises for bad input, so callers can print it as one line."""


class MdkerasError(ValueError):
    """Bad input or bad state: the message says what happened, what was expected, how to fix it."""
