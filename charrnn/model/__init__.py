"""The model directory: its shape (spec), its weights (params), its characters (vocab), and the files
that hold them (checkpoint; legacy reads format 1). Nothing here imports Numba or the kernels."""
