"""Training layer: the recipe (`recipe`), augmentation (`augment`), batches (`loader`), one epoch
(`engine`), resumable state (`state`), torchrun (`distributed`), and the run itself (`trainer`),
configured by a frozen `config.TrainConfig`.

    from expression.training.config import TrainConfig
    from expression.training import trainer
    trainer.run(TrainConfig(demo=True, epochs=1, models_dir="models"))

Imports `expression.core` and `expression.demo`, never the command line.
"""
