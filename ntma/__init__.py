"""ntma: NTMobile Direction Coordinator, NTM node and adapter on a Trio pipeline."""
