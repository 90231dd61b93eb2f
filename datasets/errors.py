"""The one error type for bad dataset input, so callers can tell it from bugs."""


class DatasetError(ValueError):
    """Bad or unavailable data; the message names the file, frame and field."""
