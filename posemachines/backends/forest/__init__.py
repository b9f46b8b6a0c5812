"""The Pose Machine of Ramakrishna et al. (ECCV 2014): random-forest stages on handcrafted image
features and context features of the stage before's beliefs."""
