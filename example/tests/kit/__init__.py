"""Tests of the template's half of the module: the kit, whatever routes the service has."""
