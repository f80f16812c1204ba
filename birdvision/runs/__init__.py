"""Run folders and what is in them: finding a run, its checkpoints and samples (folders), reading and amending
checkpoints (checkpoint), and writing artefacts atomically (artifacts)."""
