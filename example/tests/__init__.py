"""The service's tests: ``kit/`` tests the template's half, ``example/`` the example domain;
yours go beside ``conftest.py``."""
