"""Pure rules that the model and the call flow both apply: number masks (`masks`) and the DISA
PIN policy and hashing (`pin`).

Nothing here imports from `engine.flow` or `engine.model`, reads a clock or does I/O, so the
model can validate with these rules and the flow can apply them without an import cycle
(`tests/test_flow_purity.py` checks both).
"""
