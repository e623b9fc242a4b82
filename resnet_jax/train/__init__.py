"""The trainer: the config schema, the step (optimizer, schedules, augmentation on device),
the compiled calls, the loop and what happens between calls (log, evaluate, save, stop), the
shared evaluation (:mod:`resnet_jax.train.scoring`), metrics and the run's report."""
