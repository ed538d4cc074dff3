"""Composition and the batch runner: the one settings model (and its conversions to the
gateway's and lineage's configs), ``process`` (one batch of the protocol in ``batch``,
Beam computing and the runner committing), the release of held rows, compaction,
``follow``, status and the pipeline's security audit. The command line that drives them is
the ``cli`` package; the development stack is ``devstack``.

The only package besides ``transforms`` that imports Beam; it may import every package but
``cli`` and ``devstack``.
"""
