"""Pure-Python (Decimal-only) reference implementations of billhouse's billing rules.

Deliberately simple and slow; used to differentially test the SQL models. See
`charge_models` (pricing a period's units) and `aggregations` (events -> units).
"""
