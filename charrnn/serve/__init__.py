"""`charrnn serve`: a web page and an HTTP API over trained models (needs the `serve` extra).

app     the Starlette app: the page, its assets, GET /api/models, POST /api/generate
engine  batched generation: one worker thread per model steps every request's streams together
models  which models are served, by name, loaded and warmed
"""
