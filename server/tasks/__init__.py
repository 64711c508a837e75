"""The tasks the server serves, one package each, behind the interface of ``base.py`` and
listed in ``registry.py``."""
