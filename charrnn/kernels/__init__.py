"""charrnn's Numba kernels, one module per concern (this package imports nothing itself, so that
`charrnn.kernels.fastmath` can be imported alone, without the BLAS binding):

- `window`: `Kernels`, loss and gradients of a model over a (batch, time) window;
- `cells`: the cells' elementwise step kernels (rnn, gru, lstm), forward and backward;
- `stepgemm`: the recurrent step's product (generated AVX-512 kernel, OpenBLAS otherwise);
- `blas`: numpy's OpenBLAS for the large products (one BLAS thread, fallback);
- `fastmath`: fast float32 exp, tanh and sigmoid (exact in float64);
- `dropout`: the counter-based hash behind the dropout masks;
- `threads`: batch chunks on threads, and the sampler's team of threads;
- `sampler`: the sampler's step for a batch of streams, its columns split over two threads;
- `sync`: the spin barrier those threads meet at.
"""
