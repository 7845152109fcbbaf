"""Dagster orchestration of the billing close (see ``orchestration.definitions``)."""
