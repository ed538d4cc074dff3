"""Beam PTransforms and the plain functions they wrap: decode, normalise, enforce the contract,
deduplicate and series checks, the quality gate, the lake writer. See docs/PIPELINE.md.
"""
