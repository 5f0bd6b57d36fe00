"""Errors that are the user's to fix (bad settings, data, files, a full disk), not bugs. The
stages print their message alone, one or two lines naming the thing (`pipeline._cli.run`)."""


class UserError(Exception):
    """A problem with the user's settings, data, files or machine; the message says what and
    where, and what to do where that is known."""


class DataError(UserError, ValueError):
    """Input data that is missing, damaged or not in the expected layout."""
