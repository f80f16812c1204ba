"""birdvision: fine-tune bird photo and bird-call classifiers and ship them to phones and Jetsons."""

__version__ = "0.1.0"

__all__ = ["__version__"]
