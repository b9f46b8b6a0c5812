"""Every person of an image: person boxes, the detected-box protocol, one pose per person and
ids from frame to frame."""
