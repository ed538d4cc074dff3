"""Composition: the one settings model, the batch runner over landing segments, and the
commands that wire the other packages together (provisioning, release, status, demo); the
command line that drives them is the ``cli`` package.

The only package besides ``transforms`` that imports Beam; it may import every other package.
"""
