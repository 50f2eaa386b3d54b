"""Training machinery: state, optimizer, checkpoints, logging and the train loop."""
