"""Mininet topologies of the RobE paper (Figures 3 and 7) and the emulated links they stand on."""
