"""The one exception type users see: a one-line message naming the file and the problem."""


class GeoAlpsError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback.

    Raise it as ``GeoAlpsError(f"{path}: what is wrong")`` so the CLI can print it verbatim.
    """
