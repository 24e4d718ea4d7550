"""Neuron anatomy: what function of the operands each neuron computes (shape, spectrum, helix fit) and how neurons
of different layers wire together, computed over whole operand grids from the store (``../shared/anatomy.md``)."""
