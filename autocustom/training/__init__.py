"""Fine-tuning toward one pole: the config, the memory plan, losses, on-policy samples, the regulariser, the Trainer subclass, sharding and the kept model."""
