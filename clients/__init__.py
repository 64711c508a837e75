"""What users run against a vidserve server: the Python client (``clients.python``)."""

from clients.python import *  # noqa: F403
from clients.python import __all__  # noqa: F401
