"""Invoicing: finalize invoice drafts into the Postgres ledger and render them."""
