"""A run folder: every artifact's name (runs.paths) and the jobs that read and write them beside potq's
libraries (runs.quantize: quantize a trained run, QAT, compare). The libraries (ir, quant, the
interpreters) know no run folder."""
