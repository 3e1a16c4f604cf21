"""The one exception type whose message is shown to users as a one-line error."""


class UserError(Exception):
    """Bad input (model, scheme, data, flags): the CLI prints the message and exits non-zero."""
