"""Recordings at the data edge: audio I/O and DSP, windows, augmentation, the no-call class, the mel frontend."""
