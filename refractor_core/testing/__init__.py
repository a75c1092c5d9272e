"""Test helpers that ship with refractor: the conformance kit and invariance checks.

Third-party plugin authors subclass the aggregate conformance classes (one per interface)
in their own test suites.
"""
