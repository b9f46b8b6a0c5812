"""The one exception type the toolkit raises for bad input, shown to users as a one-line error."""


class PoseMachinesError(Exception):
    """A problem with the user's input (file, option, data) that has a one-line explanation."""
