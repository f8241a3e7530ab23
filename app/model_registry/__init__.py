"""Models and their versions: registration by upload or by a training job, checkpoint download."""
