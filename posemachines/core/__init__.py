"""The model itself: the stage contract, the runner that chains stages, the pose model, its
crops, belief-map codec, skeletons and test-time augmentation."""
