"""One thin entry point per DVC stage: `python -m pipeline.<stage>`. The logic lives in `cvae`."""
