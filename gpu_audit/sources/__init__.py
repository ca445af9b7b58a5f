"""Importers: telemetry a team already has, written into the same store as the collector's."""
