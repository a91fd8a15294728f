"""geoalps."""
