"""Tables, plots and pages that judge a trained model: metrics, calibration, confusion, run reports.

Everything here works on plain arrays (logits, labels, class names) or on files in a run
folder, never on a model or a data loader: :mod:`birdvision.evaluate` runs the model once
and hands the numbers over, so every table and plot can be tested on hand-made inputs.
"""
