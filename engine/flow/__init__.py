"""The call flow: a sans-I/O state machine and the pure rules it applies.

Nothing in this package reads a clock, sleeps, or touches the network, files or threads
(`tests/test_flow_purity.py` enforces it). Import the modules directly
(`engine.flow.callflow`, `engine.flow.masks`, ...); this file imports nothing so that
`engine.model` can use the pure rules without a cycle.
"""
