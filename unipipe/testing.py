"""pytest plugin for unipipe users (the `conform` fixture and case.yaml collection).

Registered as the pytest11 entry point ``unipipe``; filled in by the conformance harness work.
"""
