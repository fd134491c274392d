"""A run folder's facts: every artifact's name (runs.paths), the fingerprints that say what each was made from
(runs.provenance) and the quantized models saved there (runs.quantized). The jobs that read and write them are
potq.jobs; the libraries (ir, quant, the interpreters) know no run folder."""
