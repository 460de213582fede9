"""Fine-tuning toward one pole: losses, regulariser, data collation and the Trainer subclass."""
