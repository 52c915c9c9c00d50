"""The foundation every part of ept stands on: settings, topic names, Kafka clients by role.

Imports only :mod:`ept.schemas` below it; nothing here loads the pipeline.
"""
