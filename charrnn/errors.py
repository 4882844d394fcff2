"""The one family of errors the library raises; the CLI turns each into a one-line message."""


class CharRNNError(Exception):
    """Base of every error charrnn reports to a user."""


class InputError(CharRNNError):
    """A text file or option that charrnn cannot use."""


class ModelFormatError(CharRNNError):
    """A model directory that is missing, corrupt or of an unknown format."""


class TrainingDiverged(CharRNNError):
    """The loss became NaN or infinite."""


class DownloadError(CharRNNError):
    """A corpus could not be fetched or verified."""
