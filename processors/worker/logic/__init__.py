"""The worker's pure logic: signals, scopes, event time, rules, alert state.

No module here loads an I/O library (confluent_kafka, faust, aiohttp), through any
chain of imports (``tests/unit/test_layers.py``).
"""
