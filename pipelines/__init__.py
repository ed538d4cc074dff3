"""Composition: the CLI, the one settings model, the batch runner over landing segments, and the
commands that wire the other packages together (provisioning, release, status, demo).

The only package besides ``transforms`` that imports Beam; it may import every other package.
"""
