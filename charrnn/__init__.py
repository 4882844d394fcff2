"""charrnn: a character-level RNN language model with a Numba-compiled core."""

__version__ = "0.3.0"
