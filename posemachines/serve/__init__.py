"""``pm serve``: a web page and an HTTP API around a loaded model (FastAPI, the ``serve``
extra). ``app.create_app`` builds the application; ``batching`` predicts the requests that
arrive together as one batch; ``uploads`` reads an uploaded image within the limits."""
