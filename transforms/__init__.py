"""Beam PTransforms and the plain functions they wrap: decode, normalise, enforce the contract,
deduplicate and series checks, the quality gate, the lake writer. The transforms read the
landing segments through ``landing`` themselves. See docs/PIPELINE.md.
"""
