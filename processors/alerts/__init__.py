"""Alerts once decided: the alert topic's record, its reader, and Alertmanager delivery.

What the worker, the dashboard and ``ept notify`` / ``ept alerts`` share about alerts.
"""
