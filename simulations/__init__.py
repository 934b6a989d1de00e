"""Runnable simulations of the trust engine under attack (EigenTrust threat models).

``python -m simulations.eigentrust --seed 1`` runs threat models A and B at 30 %
and 60 % malicious agents; ``python -m simulations.scenarios --seed 1`` runs the
Sybil ring, the traitor and the false-demotion measurements. Every run is
reproducible from its seed (injected ``random.Random`` and ``ManualClock``).
"""
