"""posemachines: Pose Machines and Convolutional Pose Machines behind one interface."""

__version__ = "0.1.0"
