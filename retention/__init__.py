"""Retention tiers and data-subject rights: what the contracts' retention says is due
(``plan``: hot to archive, archive to deletion), and, as they come, the moves and the
erasure that act on it. Imports ``contracts``, ``durable``, ``lake``, ``lineage`` and
``audit`` only."""
