"""The Convolutional Pose Machine of Wei et al. (CVPR 2016), trained end to end with a loss at
every stage. torch is imported only when a CNN is trained or loaded."""
