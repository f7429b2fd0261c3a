"""The whole system: truth on trained models, real architectures, Trainer set-ups, DDP, examples, presets,
benchmarks, structure."""
