"""The errors a job turns into a one-line reason in its record (not a traceback)."""


class TransferError(Exception):
    """A transfer that failed; the message is one line for the summary."""


class ArchiveError(Exception):
    """The archive could not be made; the message says why in one line."""
