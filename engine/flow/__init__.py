"""The call flow: a sans-I/O state machine (`callflow`), its vocabulary (`events`, `actions`,
`record`) and the office-hours choice of a forward rule (`hours`).

Nothing in this package reads a clock, sleeps, or touches the network, files or threads
(`tests/test_flow_purity.py` enforces it). The pure rules it shares with the model (number
masks, the PIN policy) live in `engine.rules`. Import the modules directly
(`engine.flow.callflow`, ...).
"""
