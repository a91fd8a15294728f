"""``python -m geoalps`` is the ``geoalps`` command (used when only an interpreter path is known)."""
from geoalps.cli import main

main()
