"""Sustainability reporting: emission factors, the consumption mart, BRSR Principle 6
(energy and emissions), the ESG data pack and the CAQM DG operation log, each read through
the governed access layer (purpose ``regulatory_reporting``) and reproducible from the table
and factor versions it records (docs/REPORTING.md)."""
