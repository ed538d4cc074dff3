"""The landing log: append-only segment files of raw messages, as received, between the
gateway (which writes them) and the pipeline (which reads the closed ones).

- ``landing.format``: the bytes (constants, the envelope, the file header); docs/LANDING.md.
- ``landing.writer``: ``LandingWriter`` (append, group sync, roll, close) and ``recover``,
  which closes what a crashed writer left in ``open/``.
- ``landing.reader``: every complete record of a segment before a torn or corrupt tail, as
  Python lists or Arrow tables; the closed segments of a landing folder.
- ``landing.chunks``: what the batch reads: groups of closed segments, envelope chunks of
  about ``CHUNK_RECORDS``, envelopes again by offset.

Imports only ``contracts``; never Beam. Used by the gateway, the simulator, the transforms
and the pipeline, each importing the module it needs (``from landing.writer import
LandingWriter``). Nothing is re-exported here: a process started in a data folder has that
folder's ``landing/`` on sys.path, and under an editable install it shadows this package's
``__init__`` (not its modules). See docs/LANDING.md.
"""
