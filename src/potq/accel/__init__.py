"""potq.accel: the accelerator model, an interpreter of the integer graph (issue 18; docs/accel.md).

workload.py (loop nest per node), arch.py (architecture files, presets in archs/), systolic.py (WS/OS/IS
in closed form), row_stationary.py and search.py (Eyeriss row-stationary and the mapping search),
model.py (per-node cycles, traffic, energy, roofline; network totals), dse.py (the design-space sweep over
the model and its Pareto front), peers.py (SCALE-Sim export), limits.py (every size the model accepts).
"""
