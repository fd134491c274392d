"""potq's integer graph: node types, the graph and its validity check, capture from torch, file format."""
