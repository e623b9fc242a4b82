"""The PyTorch side: the twin trainer, its models, and the logits parity check."""
