"""Sans-I/O anti-entropy: version vectors, heads, missing ops in causal order."""
