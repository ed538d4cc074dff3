"""The ``energylake`` command line: the root app (``cli/app.py``), one module per command
group, and the console rendering beside it (``cli/render.py``)."""
