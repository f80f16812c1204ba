"""Data edge: manifests, splits, image and audio datasets, the mel frontend."""
