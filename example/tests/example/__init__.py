"""Tests of the example domain: owners, tags and items. Copy one to test a resource of yours."""
