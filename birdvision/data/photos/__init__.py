"""Photos at the data edge: decoding, transforms and datasets, shards, generated demo and out-of-distribution images."""
