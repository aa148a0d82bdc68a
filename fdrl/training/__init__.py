"""Training: FDRLTrainer (eq. 15), the named systems, and the leave-one-session-out protocol."""
