"""The mean-pose prior: the average target belief maps of the training crops, a baseline."""
