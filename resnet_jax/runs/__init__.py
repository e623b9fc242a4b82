"""A run's files: the work directory (every file's name, reader and writer, the lock) and its
checkpoints (written by the trainer; read by resume, evaluate, predict and init_from)."""
